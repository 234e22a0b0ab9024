package protocol

import (
	"errors"
	"strings"
	"testing"

	"github.com/ssegate/ssegate/pkg/event"
)

func TestValidJobID(t *testing.T) {
	t.Parallel()
	good := []string{"a", "abc-123", "A.b_c:d-e", strings.Repeat("x", 128)}
	bad := []string{"", strings.Repeat("x", 129), "a b", "a/b", "{a}", "é", "a\x00", "a\n", "a%2F", "a?b", "a#b"}
	for _, id := range good {
		if !ValidJobID(id) {
			t.Errorf("ValidJobID(%q) = false", id)
		}
	}
	for _, id := range bad {
		if ValidJobID(id) {
			t.Errorf("ValidJobID(%q) = true", id)
		}
	}
}

func TestKeys(t *testing.T) {
	t.Parallel()
	k := NewKeys("")
	if got := k.Events("abc"); got != "ssegate:{abc}:events" {
		t.Errorf("Events = %q", got)
	}
	if got := k.State("abc"); got != "ssegate:{abc}:state" {
		t.Errorf("State = %q", got)
	}
	if got := k.Live("abc"); got != "ssegate:{abc}:live" {
		t.Errorf("Live = %q", got)
	}
	if got := (Keys{}).Live("abc"); got != "ssegate:{abc}:live" {
		t.Errorf("zero Keys Live = %q", got)
	}
	k2 := NewKeys("acme:reports")
	if got := k2.State("j-1"); got != "acme:reports:{j-1}:state" {
		t.Errorf("custom prefix State = %q", got)
	}
	for _, tc := range []struct {
		keys    Keys
		channel string
		job     string
		ok      bool
	}{
		{k, "ssegate:{abc}:live", "abc", true},
		{k2, "acme:reports:{j:1}:live", "j:1", true},
		{k, "ssegate:{abc}:events", "", false},
		{k, "other:{abc}:live", "", false},
		{k, "ssegate:canary:x", "", false},
		{k, "ssegate:{}:live", "", true},
		{k, "ssegate", "", false},
	} {
		job, ok := tc.keys.JobFromLive(tc.channel)
		if job != tc.job || ok != tc.ok {
			t.Errorf("JobFromLive(%q) = %q, %v; want %q, %v", tc.channel, job, ok, tc.job, tc.ok)
		}
	}
}

func TestKeysShareOneSlot(t *testing.T) {
	t.Parallel()
	for _, job := range []string{"abc", "job-1", "a:b:c", "x.y_z", strings.Repeat("9", 128)} {
		for _, k := range []Keys{NewKeys(""), NewKeys("p:{q}")} {
			want := Slot(k.Events(job))
			if Slot(k.State(job)) != want || Slot(k.Live(job)) != want {
				t.Errorf("job %q prefix %q: keys in different slots", job, k.Prefix())
			}
		}
	}
}

func TestParseID(t *testing.T) {
	t.Parallel()
	good := map[string]ID{
		"0-0":                    {},
		"1764230400000-0":        {Ms: 1764230400000, Seq: 0},
		"1-18446744073709551615": {Ms: 1, Seq: 1<<64 - 1},
	}
	for s, want := range good {
		got, err := ParseID(s)
		if err != nil || got != want {
			t.Errorf("ParseID(%q) = %v, %v; want %v", s, got, err, want)
		}
		if got.String() != s {
			t.Errorf("String() = %q, want %q", got.String(), s)
		}
	}
	for _, s := range []string{"", "1", "-1", "1-", "-", "a-1", "1-a", "+1-0", " 1-0", "1-0 ", "1-0-0",
		"18446744073709551616-0", "1-1\n", strings.Repeat("1", 42)} {
		if _, err := ParseID(s); !errors.Is(err, ErrInvalidID) {
			t.Errorf("ParseID(%q) err = %v", s, err)
		}
	}
	a, b, c := ID{1, 5}, ID{2, 0}, ID{2, 1}
	if !a.Less(b) || !b.Less(c) || c.Less(a) || a.Less(a) {
		t.Error("Less is wrong")
	}
	if !(ID{}).IsZero() || a.IsZero() {
		t.Error("IsZero is wrong")
	}
}

func TestLiveCodec(t *testing.T) {
	t.Parallel()
	id := ID{Ms: 1764230400000, Seq: 3}
	for _, data := range []string{`{"a":1}`, "", "line1\nline2", "\n\n"} {
		enc := EncodeLive(id, event.TypeProgress, data)
		got, err := DecodeLive(enc)
		if err != nil {
			t.Fatalf("DecodeLive(%q): %v", enc, err)
		}
		if got.ID != id || got.Type != event.TypeProgress || got.Data != data {
			t.Errorf("round trip of %q = %+v", data, got)
		}
	}
	if got := EncodeLive(id, event.TypeStatus, `{}`); got != "1\n1764230400000-3\nstatus\n{}" {
		t.Errorf("wire form = %q", got)
	}
	for _, bad := range []string{"", "1", "1\n1-0", "1\n1-0\nstatus", "1\nx\nstatus\n{}", "1\n1-0\nbogus\n{}", "1\n1-0\n\n{}"} {
		if _, err := DecodeLive(bad); !errors.Is(err, ErrInvalidLive) {
			t.Errorf("DecodeLive(%q) err = %v, want ErrInvalidLive", bad, err)
		}
	}
	if _, err := DecodeLive("2\n1-0\nstatus\n{}"); !errors.Is(err, ErrLiveVersion) {
		t.Errorf("version 2: err = %v", err)
	}
}

func FuzzDecodeLive(f *testing.F) {
	f.Add("1\n1-0\nstatus\n{}")
	f.Add("1\n18446744073709551615-1\ncomplete\n\n")
	f.Fuzz(func(t *testing.T, payload string) {
		m, err := DecodeLive(payload)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to the same message, canonical IDs aside.
		again, err := DecodeLive(EncodeLive(m.ID, m.Type, m.Data))
		if err != nil || again != m {
			t.Fatalf("re-encode of %+v = %+v, %v", m, again, err)
		}
	})
}

func FuzzParseID(f *testing.F) {
	f.Add("1764230400000-0")
	f.Add("0-18446744073709551615")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID(s)
		if err != nil {
			return
		}
		back, err := ParseID(id.String())
		if err != nil || back != id {
			t.Fatalf("%q -> %v -> %q -> %v, %v", s, id, id.String(), back, err)
		}
		if strings.ContainsAny(id.String(), "\r\n\x00 ") {
			t.Fatalf("ID %q has a forbidden character", id.String())
		}
	})
}
