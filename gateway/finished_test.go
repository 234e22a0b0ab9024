package gateway

import (
	"testing"

	"github.com/ssegate/ssegate/pkg/protocol"
)

// A finished job's read serves every resume from its point or later that it
// can tell about, and sends the others to a read of their own.
func TestFinishedReadServe(t *testing.T) {
	t.Parallel()
	id := func(s string) protocol.ID {
		v, err := protocol.ParseID(s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	// Read from 2-0: the entries 3-0 to 7-0 after it.
	read := func(found, more bool) *finishedRead {
		r := &finishedRead{from: id("2-0"), found: found, more: more, history: make([]historyEntry, 5)}
		for _, s := range []string{"3-0", "4-0", "5-0", "6-0", "7-0"} {
			r.ids = append(r.ids, id(s))
		}
		return r
	}
	for _, tt := range []struct {
		name                 string
		r                    *finishedRead
		from                 string
		entries              int
		found, more, canTell bool
	}{
		{"its own point", read(true, false), "2-0", 5, true, false, true},
		{"its own point, trimmed", read(false, false), "2-0", 5, false, false, true},
		{"a later point", read(true, false), "4-0", 3, true, false, true},
		{"a later point, the read's own trimmed", read(false, false), "4-0", 3, true, false, true},
		{"the newest entry", read(true, false), "7-0", 0, true, false, true},
		{"a later point of a full page", read(true, true), "5-0", 2, true, true, true},
		{"not in the stream", read(true, false), "4-5", 0, false, false, true},
		{"past the whole stream", read(true, false), "9-0", 0, false, false, true},
		{"past a full page", read(true, true), "9-0", 0, false, false, false},
		{"between entries of a full page", read(true, true), "4-5", 0, false, false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h, found, more, ok := tt.r.serve(id(tt.from))
			if ok != tt.canTell {
				t.Fatalf("can tell = %v, want %v", ok, tt.canTell)
			}
			if len(h) != tt.entries || found != tt.found || more != tt.more {
				t.Errorf("%d entries, found %v, more %v; want %d, %v, %v", len(h), found, more, tt.entries, tt.found, tt.more)
			}
		})
	}
}
