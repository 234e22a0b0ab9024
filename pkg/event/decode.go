package event

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"time"
)

// DefaultMaxEventSize is the largest event a Decoder accepts unless told
// otherwise: room for a 1 MiB report and its JSON escaping.
const DefaultMaxEventSize = 8 << 20

// ErrEventTooLarge is returned by Decoder.Next when one event (or one line)
// is larger than the decoder's limit.
var ErrEventTooLarge = errors.New("event: event too large")

// A Decoder reads Server-Sent Events from a stream, following the WHATWG
// "event stream interpretation" rules: an optional leading BOM, CR, LF and
// CRLF line ends, comment lines, multi-line data, retry only when all digits,
// an id containing NUL ignored, and an unterminated event at the end of the
// stream discarded.
//
// A Decoder is not safe for concurrent use.
type Decoder struct {
	r   io.Reader
	max int

	buf      []byte
	pos, end int
	readErr  error
	started  bool   // the BOM check is done
	skipLF   bool   // the last line ended with CR: a following LF belongs to it
	idBuf    string // the "last event ID buffer": the latest id field
	lastID   string // the "last event ID string": idBuf as of the latest blank line
	retry    time.Duration
	data     []byte
	event    []byte
	inEvent  int // bytes of the event being assembled, for the size limit
	dataSeen bool
}

// NewDecoder returns a Decoder reading from r with DefaultMaxEventSize.
func NewDecoder(r io.Reader) *Decoder { return NewDecoderSize(r, DefaultMaxEventSize) }

// NewDecoderSize returns a Decoder that refuses events larger than max bytes.
func NewDecoderSize(r io.Reader, max int) *Decoder {
	if max <= 0 {
		max = DefaultMaxEventSize
	}
	return &Decoder{r: r, max: max, buf: make([]byte, 4096)}
}

// LastEventID returns the stream's last event ID as a browser's EventSource
// would send it on reconnect: the latest id field, taken at each blank line
// (so an id in an unfinished block does not count yet). It persists across
// events.
func (d *Decoder) LastEventID() string { return d.lastID }

// SetLastEventID seeds the last event ID of a new connection with the one
// the client resumes from, as browsers do. (The WHATWG text starts each
// connection's buffer empty, so a blank line before the first id would
// clear it; servers should not rely on either, and ssegate's repeats the
// resume point first.)
func (d *Decoder) SetLastEventID(id string) { d.idBuf, d.lastID = id, id }

// Retry returns the latest valid retry hint, or 0 if none was received.
func (d *Decoder) Retry() time.Duration { return d.retry }

// Next returns the next dispatched message. Its Event is "message" when the
// stream named none, and its ID is the last event ID at dispatch. At the end
// of the stream Next returns io.EOF; any other error is the reader's or
// ErrEventTooLarge.
func (d *Decoder) Next() (Message, error) {
	for {
		line, err := d.readLine()
		if err != nil {
			return Message{}, err
		}
		if len(line) == 0 {
			if m, ok := d.dispatch(); ok {
				return m, nil
			}
			continue
		}
		d.inEvent += len(line)
		if d.inEvent > d.max {
			return Message{}, ErrEventTooLarge
		}
		d.field(line)
	}
}

func (d *Decoder) field(line []byte) {
	if line[0] == ':' {
		return // comment
	}
	name, value := line, []byte(nil)
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		name, value = line[:i], line[i+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	}
	switch string(name) {
	case "event":
		d.event = append(d.event[:0], value...)
	case "data":
		d.data = append(d.data, value...)
		d.data = append(d.data, '\n')
		d.dataSeen = true
	case "id":
		if bytes.IndexByte(value, 0) < 0 {
			d.idBuf = string(value)
		}
	case "retry":
		if len(value) > 0 && allDigits(value) {
			if ms, err := strconv.ParseInt(string(value), 10, 64); err == nil && ms <= int64(time.Duration(1<<63-1)/time.Millisecond) {
				d.retry = time.Duration(ms) * time.Millisecond
			}
		}
	}
}

// dispatch ends the current event. Per the rules, an event whose data buffer
// is empty is not dispatched, and one trailing LF is removed from the data.
func (d *Decoder) dispatch() (Message, bool) {
	defer func() {
		d.data, d.event, d.inEvent, d.dataSeen = d.data[:0], d.event[:0], 0, false
	}()
	d.lastID = d.idBuf
	if !d.dataSeen {
		return Message{}, false
	}
	data := make([]byte, len(d.data)-1)
	copy(data, d.data)
	name := "message"
	if len(d.event) > 0 {
		name = string(d.event)
	}
	return Message{ID: d.lastID, Event: name, Data: data}, true
}

// readLine returns the next line without its line end. The slice is valid
// until the next call.
func (d *Decoder) readLine() ([]byte, error) {
	for {
		if !d.started {
			// One leading BOM is skipped; wait while what we have could
			// still be the start of one.
			b := d.buf[d.pos:d.end]
			switch {
			case bytes.HasPrefix(b, bom):
				d.pos += 3
				d.started = true
			case len(b) > 0 && bytes.HasPrefix(bom, b) && d.readErr == nil:
			case len(b) > 0 || d.readErr != nil:
				d.started = true
			}
		}
		if d.started {
			if d.skipLF && d.pos < d.end {
				if d.buf[d.pos] == '\n' {
					d.pos++
				}
				d.skipLF = false
			}
			if i := bytes.IndexAny(d.buf[d.pos:d.end], "\r\n"); i >= 0 {
				line := d.buf[d.pos : d.pos+i]
				d.skipLF = d.buf[d.pos+i] == '\r'
				d.pos += i + 1
				return line, nil
			}
		}
		if d.readErr != nil {
			// A line without its end at the end of the stream is discarded,
			// and so is any event it belonged to.
			return nil, d.readErr
		}
		if err := d.fill(); err != nil {
			return nil, err
		}
	}
}

// fill reads more bytes, compacting or growing the buffer as needed.
func (d *Decoder) fill() error {
	if d.pos > 0 {
		n := copy(d.buf, d.buf[d.pos:d.end])
		d.pos, d.end = 0, n
	}
	if d.end == len(d.buf) {
		if len(d.buf) > d.max {
			return ErrEventTooLarge
		}
		nb := make([]byte, 2*len(d.buf))
		copy(nb, d.buf[:d.end])
		d.buf = nb
	}
	n, err := d.r.Read(d.buf[d.end:])
	d.end += n
	if err != nil {
		d.readErr = err
	}
	return nil
}

var bom = []byte("\xef\xbb\xbf")

func allDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
