package protocol_test

import (
	"testing"

	"github.com/ssegate/ssegate/pkg/protocol"
)

// TestSlot: the values Redis itself gives (CLUSTER KEYSLOT), and one slot
// for all of a job's keys.
func TestSlot(t *testing.T) {
	t.Parallel()
	for key, want := range map[string]int{
		"123456789":            12739, // the CRC-16/XMODEM check value 0x31C3
		"foo":                  12182,
		"{user1000}.following": 3443,
		"{}x":                  protocol.Slot("{}x"), // an empty tag: the whole key
		"a{b":                  protocol.Slot("a{b"),
	} {
		if got := protocol.Slot(key); got != want {
			t.Errorf("Slot(%q) = %d, want %d", key, got, want)
		}
	}
	if protocol.Slot("{}x") == protocol.Slot("x") {
		t.Error("an empty hash tag must hash the whole key")
	}
	k := protocol.NewKeys("ssegate")
	s := protocol.Slot(k.Events("job-1"))
	if protocol.Slot(k.State("job-1")) != s || protocol.Slot(k.Live("job-1")) != s || protocol.Slot("job-1") != s {
		t.Error("a job's keys are not in one slot")
	}
}
