package event

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
	"time"
)

// Encoding errors. An id or event name that the WHATWG parser would misread is
// refused, never written.
var (
	ErrInvalidID    = errors.New("event: id contains CR, LF or NUL")
	ErrInvalidEvent = errors.New("event: event name contains CR, LF or NUL")
)

// Message is one Server-Sent Events message: the fields of one block of lines
// ended by a blank line. The same type is produced by Decoder.
type Message struct {
	// ID is the id field. Empty means no id line, so the client's
	// Last-Event-ID stays as it was. When decoded, it is the stream's last
	// event ID at the time the message was dispatched, as the WHATWG rules say.
	ID string
	// Event is the event name. Empty means no event line (the client sees
	// the default name "message").
	Event string
	// Data is the payload. Each line break (LF, CRLF or CR) starts a new
	// data line; a client joins them with LF, so CR and CRLF arrive as LF.
	// A Message with no Event and nil Data writes no data line at all: it
	// only carries its other fields (a retry hint, a comment).
	Data []byte
	// Retry, when positive, is the reconnection delay hint, written in
	// whole milliseconds.
	Retry time.Duration
	// Comment, when not empty, is written as comment lines first; clients
	// ignore them. Line breaks start new comment lines.
	Comment string
}

// AppendTo appends the wire form of m to dst and returns the extended buffer.
func (m *Message) AppendTo(dst []byte) ([]byte, error) {
	if !validField(m.ID) {
		return dst, ErrInvalidID
	}
	if !validField(m.Event) {
		return dst, ErrInvalidEvent
	}
	if m.Comment != "" {
		dst = appendLines(dst, ":", m.Comment)
	}
	if m.Retry > 0 {
		dst = append(dst, "retry: "...)
		dst = strconv.AppendInt(dst, m.Retry.Milliseconds(), 10)
		dst = append(dst, '\n')
	}
	if m.ID != "" {
		dst = append(dst, "id: "...)
		dst = append(dst, m.ID...)
		dst = append(dst, '\n')
	}
	if m.Event != "" {
		dst = append(dst, "event: "...)
		dst = append(dst, m.Event...)
		dst = append(dst, '\n')
	}
	if m.Data != nil || m.Event != "" {
		dst = appendLines(dst, "data:", m.Data)
	}
	return append(dst, '\n'), nil
}

// Bytes returns the wire form of m.
func (m *Message) Bytes() ([]byte, error) {
	return m.AppendTo(make([]byte, 0, m.size()))
}

// WriteTo writes the wire form of m to w. It implements io.WriterTo.
func (m *Message) WriteTo(w io.Writer) (int64, error) {
	b, err := m.Bytes()
	if err != nil {
		return 0, err
	}
	n, err := w.Write(b)
	return int64(n), err
}

// size is a close upper bound of the encoded length, to size buffers once.
func (m *Message) size() int {
	n := len(m.ID) + len(m.Event) + len(m.Data) + len(m.Comment) + 32
	if m.Comment != "" || len(m.Data) > 0 {
		n += 8 * (bytes.Count(m.Data, []byte{'\n'}) + bytes.Count(m.Data, []byte{'\r'}) + strings.Count(m.Comment, "\n") + 1)
	}
	return n
}

// appendLines writes s as one "<prefix> <line>\n" per line of s, splitting on
// LF, CRLF and CR. The space after the prefix keeps any leading space of the
// line intact: a parser strips exactly one.
func appendLines[T string | []byte](dst []byte, prefix string, s T) []byte {
	for {
		i := indexLineBreak(s)
		dst = append(dst, prefix...)
		dst = append(dst, ' ')
		if i < 0 {
			dst = append(dst, s...)
			return append(dst, '\n')
		}
		dst = append(dst, s[:i]...)
		dst = append(dst, '\n')
		if s[i] == '\r' && i+1 < len(s) && s[i+1] == '\n' {
			i++
		}
		s = s[i+1:]
	}
}

func indexLineBreak[T string | []byte](s T) int {
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' || s[i] == '\r' {
			return i
		}
	}
	return -1
}

// validField reports whether s can be an id or event value: no line break
// (which would end the field early) and no NUL (which makes a client ignore
// an id).
func validField(s string) bool {
	return !strings.ContainsAny(s, "\r\n\x00")
}
