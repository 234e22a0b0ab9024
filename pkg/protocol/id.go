package protocol

import (
	"errors"
	"strconv"
	"strings"
	"time"
)

// ErrInvalidID is returned by ParseID for anything but "<ms>-<seq>".
var ErrInvalidID = errors.New("invalid event ID: want <milliseconds>-<sequence>")

// maxIDLen is the longest valid ID: two 20-digit uint64s and a dash.
const maxIDLen = 41

// ID is a Redis Stream entry ID, the event ID clients see. IDs of one job
// strictly increase; the zero ID is before every event.
type ID struct {
	Ms, Seq uint64
}

// ParseID parses "<ms>-<seq>", each a base-10 uint64 without sign or space.
func ParseID(s string) (ID, error) {
	if len(s) == 0 || len(s) > maxIDLen {
		return ID{}, ErrInvalidID
	}
	ms, seq, ok := strings.Cut(s, "-")
	if !ok || !digits(ms) || !digits(seq) {
		return ID{}, ErrInvalidID
	}
	m, err1 := strconv.ParseUint(ms, 10, 64)
	q, err2 := strconv.ParseUint(seq, 10, 64)
	if err1 != nil || err2 != nil {
		return ID{}, ErrInvalidID
	}
	return ID{Ms: m, Seq: q}, nil
}

func digits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// String returns the ID in Redis form.
func (id ID) String() string { return string(id.AppendTo(make([]byte, 0, 24))) }

// AppendTo appends the Redis form of id to b.
func (id ID) AppendTo(b []byte) []byte {
	b = strconv.AppendUint(b, id.Ms, 10)
	b = append(b, '-')
	return strconv.AppendUint(b, id.Seq, 10)
}

// IsZero reports whether id is the zero ID.
func (id ID) IsZero() bool { return id == ID{} }

// Less reports whether id comes before o.
func (id ID) Less(o ID) bool { return id.Ms < o.Ms || id.Ms == o.Ms && id.Seq < o.Seq }

// Time is the Redis server time at which the entry was added.
func (id ID) Time() time.Time { return time.UnixMilli(int64(id.Ms)) }
