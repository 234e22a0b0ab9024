package event

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func TestMessageAppendTo(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		m    Message
		want string
	}{
		{"full", Message{ID: "1764230400000-0", Event: "progress", Data: []byte(`{"a":1}`)},
			"id: 1764230400000-0\nevent: progress\ndata: {\"a\":1}\n\n"},
		{"no id", Message{Event: "heartbeat", Data: []byte(`{}`)},
			"event: heartbeat\ndata: {}\n\n"},
		{"LF splits data", Message{Event: "x", Data: []byte("a\nb")},
			"event: x\ndata: a\ndata: b\n\n"},
		{"CRLF is one break", Message{Event: "x", Data: []byte("a\r\nb")},
			"event: x\ndata: a\ndata: b\n\n"},
		{"lone CR splits", Message{Event: "x", Data: []byte("a\rb")},
			"event: x\ndata: a\ndata: b\n\n"},
		{"trailing LF keeps an empty line", Message{Event: "x", Data: []byte("a\n")},
			"event: x\ndata: a\ndata: \n\n"},
		{"empty data", Message{Event: "x", Data: []byte{}},
			"event: x\ndata: \n\n"},
		{"leading space survives", Message{Event: "x", Data: []byte(" a")},
			"event: x\ndata:  a\n\n"},
		{"unicode", Message{Event: "x", Data: []byte("häß ✓ 🚀")},
			"event: x\ndata: häß ✓ 🚀\n\n"},
		{"retry and comment only", Message{Retry: 2500 * time.Millisecond, Comment: "draining"},
			": draining\nretry: 2500\n\n"},
		{"multi-line comment", Message{Comment: "a\nb"},
			": a\n: b\n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := tt.m.AppendTo(nil)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
			var w bytes.Buffer
			if n, err := tt.m.WriteTo(&w); err != nil || int(n) != len(tt.want) || w.String() != tt.want {
				t.Errorf("WriteTo = %d, %v, %q", n, err, w.String())
			}
		})
	}
}

func TestMessageRefusesInjection(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"a\nevent: evil", "a\rb", "a\r\n", "a\x00b"} {
		if b, err := (&Message{ID: bad, Data: []byte("x")}).AppendTo(nil); !errors.Is(err, ErrInvalidID) || len(b) != 0 {
			t.Errorf("id %q: got %q, %v", bad, b, err)
		}
		if b, err := (&Message{Event: bad, Data: []byte("x")}).AppendTo(nil); !errors.Is(err, ErrInvalidEvent) || len(b) != 0 {
			t.Errorf("event %q: got %q, %v", bad, b, err)
		}
		if _, err := (&Message{Event: bad}).WriteTo(io.Discard); err == nil {
			t.Errorf("WriteTo accepted event %q", bad)
		}
	}
}

func decodeAll(t *testing.T, r io.Reader) ([]Message, *Decoder) {
	t.Helper()
	d := NewDecoder(r)
	var got []Message
	for {
		m, err := d.Next()
		if err == io.EOF {
			return got, d
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		got = append(got, m)
	}
}

func TestDecoderWHATWG(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		in    string
		want  []Message
		retry time.Duration
	}{
		{"simple", "data: hi\n\n", []Message{{Event: "message", Data: []byte("hi")}}, 0},
		{"no space after colon", "data:hi\n\n", []Message{{Event: "message", Data: []byte("hi")}}, 0},
		{"only one space stripped", "data:  hi\n\n", []Message{{Event: "message", Data: []byte(" hi")}}, 0},
		{"BOM skipped once", "\ufeffdata: a\n\n", []Message{{Event: "message", Data: []byte("a")}}, 0},
		{"second BOM is data", "\ufeff\ufeffdata: a\n\ndata: b\n\n", []Message{{Event: "message", Data: []byte("b")}}, 0},
		{"CR line ends", "event: x\rdata: a\rdata: b\r\r", []Message{{Event: "x", Data: []byte("a\nb")}}, 0},
		{"CRLF line ends", "id: 7\r\ndata: a\r\n\r\n", []Message{{ID: "7", Event: "message", Data: []byte("a")}}, 0},
		{"comments ignored", ": hello\ndata: a\n: mid\n\n", []Message{{Event: "message", Data: []byte("a")}}, 0},
		{"field without colon", "data\n\n", []Message{{Event: "message", Data: []byte("")}}, 0},
		{"no data, no dispatch", "event: x\n\nid: 3\n\n", nil, 0},
		{"id persists", "id: 1\ndata: a\n\ndata: b\n\n",
			[]Message{{ID: "1", Event: "message", Data: []byte("a")}, {ID: "1", Event: "message", Data: []byte("b")}}, 0},
		{"id with NUL ignored", "id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n",
			[]Message{{ID: "1", Event: "message", Data: []byte("a")}, {ID: "1", Event: "message", Data: []byte("b")}}, 0},
		{"empty id resets", "id: 1\ndata: a\n\nid\ndata: b\n\n",
			[]Message{{ID: "1", Event: "message", Data: []byte("a")}, {ID: "", Event: "message", Data: []byte("b")}}, 0},
		{"retry digits", "retry: 1500\n\n", nil, 1500 * time.Millisecond},
		{"retry not digits ignored", "retry: 1500\n\nretry: 15x\n\nretry: -1\n\nretry:\n\n", nil, 1500 * time.Millisecond},
		{"unknown field ignored", "foo: bar\ndata: a\n\n", []Message{{Event: "message", Data: []byte("a")}}, 0},
		{"unterminated event discarded", "data: a\n\ndata: b\n", []Message{{Event: "message", Data: []byte("a")}}, 0},
		{"unterminated line discarded", "data: a\n\ndata: b", []Message{{Event: "message", Data: []byte("a")}}, 0},
		{"event name resets after dispatch", "event: x\ndata: a\n\ndata: b\n\n",
			[]Message{{Event: "x", Data: []byte("a")}, {Event: "message", Data: []byte("b")}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// Byte-at-a-time reads find every split of CR and LF across reads.
			for _, r := range []io.Reader{strings.NewReader(tt.in), iotest.OneByteReader(strings.NewReader(tt.in))} {
				got, d := decodeAll(t, r)
				if !equalMessages(got, tt.want) {
					t.Errorf("got  %q\nwant %q", got, tt.want)
				}
				if d.Retry() != tt.retry {
					t.Errorf("retry = %v, want %v", d.Retry(), tt.retry)
				}
			}
		})
	}
}

func TestDecoderLastEventIDAtBlankLine(t *testing.T) {
	t.Parallel()
	d := NewDecoder(strings.NewReader("id: 1\ndata: a\n\nid: 2\n\nid: 3\ndata: c\n"))
	if m, err := d.Next(); err != nil || m.ID != "1" || d.LastEventID() != "1" {
		t.Fatalf("first = %+v, %v, last %q", m, err, d.LastEventID())
	}
	if _, err := d.Next(); err != io.EOF {
		t.Fatalf("err = %v, want EOF", err)
	}
	// "id: 2" was ended by a blank line (no event, but the ID counts);
	// "id: 3" was not: a browser would resume from 2.
	if got := d.LastEventID(); got != "2" {
		t.Errorf("LastEventID = %q, want 2", got)
	}
}

func TestDecoderLimit(t *testing.T) {
	t.Parallel()
	big := "data: " + strings.Repeat("x", 200) + "\n\n"
	d := NewDecoderSize(strings.NewReader(big), 100)
	if _, err := d.Next(); !errors.Is(err, ErrEventTooLarge) {
		t.Fatalf("err = %v, want ErrEventTooLarge", err)
	}
	many := strings.Repeat("data: "+strings.Repeat("x", 30)+"\n", 10) + "\n"
	d = NewDecoderSize(strings.NewReader(many), 100)
	if _, err := d.Next(); !errors.Is(err, ErrEventTooLarge) {
		t.Fatalf("err = %v, want ErrEventTooLarge for many lines", err)
	}
}

func TestDecoderReaderError(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	d := NewDecoder(io.MultiReader(strings.NewReader("data: a\n\n"), iotest.ErrReader(boom)))
	if m, err := d.Next(); err != nil || string(m.Data) != "a" {
		t.Fatalf("first = %q, %v", m.Data, err)
	}
	if _, err := d.Next(); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	for _, data := range []string{
		"", "plain", "a\nb", "a\r\nb", "a\rb", "\n", "\r\n\r\n", "a\n", " lead", "  two", ":colon",
		"data: fake\n\nevent: fake", "häß ✓ 🚀", "\x00nul", `{"type":"progress","step":1}`,
	} {
		checkRoundTrip(t, "1-0", "progress", []byte(data))
	}
}

// checkRoundTrip encodes one message followed by a marker and checks that the
// decoder returns exactly it: same id, same name, same data with line breaks
// normalized to LF (the only change the SSE format makes), and nothing else.
func checkRoundTrip(t *testing.T, id, name string, data []byte) {
	t.Helper()
	if data == nil {
		data = []byte{} // nil data with no event name means "no data line"
	}
	m := Message{ID: id, Event: name, Data: data}
	b, err := m.AppendTo(nil)
	if err != nil {
		if validField(id) && validField(name) {
			t.Fatalf("encode refused valid message %q: %v", m, err)
		}
		return
	}
	b = append(b, "event: end\ndata: .\n\n"...)
	got, _ := decodeAll(t, bytes.NewReader(b))
	wantName := name
	if wantName == "" {
		wantName = "message"
	}
	want := []Message{{ID: id, Event: wantName, Data: normalizeBreaks(data)}, {ID: id, Event: "end", Data: []byte(".")}}
	if !equalMessages(got, want) {
		t.Fatalf("round trip of %q:\n got  %q\n want %q", m, got, want)
	}
}

func FuzzRoundTrip(f *testing.F) {
	f.Add("1764230400000-0", "progress", []byte(`{"a":1}`))
	f.Add("", "", []byte("a\r\nb\rc\n"))
	f.Add("x y", "ev ent", []byte(" \ufeff:"))
	f.Fuzz(func(t *testing.T, id, name string, data []byte) {
		checkRoundTrip(t, id, name, data)
	})
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte("id: 1\nevent: x\ndata: a\r\ndata: b\r\r: c\nretry: 10\n\n"))
	f.Add([]byte("\ufeffdata\n\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		whole, _ := decodeAllLimit(bytes.NewReader(in))
		split, _ := decodeAllLimit(iotest.OneByteReader(bytes.NewReader(in)))
		if !equalMessages(whole, split) {
			t.Fatalf("read size changed the result: %q vs %q", whole, split)
		}
		for _, m := range whole {
			if strings.ContainsAny(m.ID, "\r\n\x00") || strings.ContainsAny(m.Event, "\r\n") {
				t.Fatalf("decoded a field with a line break or NUL: %q", m)
			}
			// Whatever was decoded encodes back to the same message.
			checkRoundTrip(t, m.ID, m.Event, m.Data)
		}
	})
}

func decodeAllLimit(r io.Reader) ([]Message, error) {
	d := NewDecoderSize(r, 1<<16)
	var got []Message
	for {
		m, err := d.Next()
		if err != nil {
			return got, err
		}
		got = append(got, m)
	}
}

func normalizeBreaks(b []byte) []byte {
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	return bytes.ReplaceAll(b, []byte("\r"), []byte("\n"))
}

func equalMessages(a, b []Message) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ID != b[i].ID || a[i].Event != b[i].Event || !bytes.Equal(a[i].Data, b[i].Data) {
			return false
		}
	}
	return true
}

func BenchmarkMessage_AppendTo(b *testing.B) {
	m := Message{
		ID:    "1764230400000-0",
		Event: "progress",
		Data:  []byte(`{"type":"progress","jobId":"abc","step":2,"totalSteps":8,"currentStep":"Aggregating","percentage":25,"estimatedRemainingMs":42000,"timestamp":"2026-11-27T03:40:30.123Z"}`),
	}
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	b.SetBytes(int64(len(m.Data)))
	for b.Loop() {
		var err error
		if buf, err = m.AppendTo(buf[:0]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMessage_Bytes(b *testing.B) {
	m := Message{ID: "1764230400000-0", Event: "progress", Data: []byte(`{"type":"progress","jobId":"abc","step":2}`)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Bytes(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecoder(b *testing.B) {
	m := Message{ID: "1764230400000-0", Event: "progress", Data: []byte(`{"type":"progress","jobId":"abc","step":2,"totalSteps":8,"currentStep":"Aggregating","percentage":25}`)}
	one, _ := m.Bytes()
	stream := bytes.Repeat(one, 1000)
	b.ReportAllocs()
	b.SetBytes(int64(len(stream)))
	for b.Loop() {
		d := NewDecoder(bytes.NewReader(stream))
		for {
			if _, err := d.Next(); err != nil {
				break
			}
		}
	}
}
