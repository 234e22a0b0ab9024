package protocol

import (
	"errors"
	"strconv"
	"strings"

	"github.com/ssegate/ssegate/pkg/event"
)

// ErrInvalidLive is returned by DecodeLive for a payload that is not a
// version 1 live message.
var ErrInvalidLive = errors.New("invalid live message")

// ErrLiveVersion is returned by DecodeLive for a message of another protocol
// version.
var ErrLiveVersion = errors.New("unsupported live message version")

// LiveMessage is what the publish script sends on a job's live channel:
//
//	1 LF <stream ID> LF <type> LF <data>
//
// The version comes first so that a later version can change the rest; the
// data comes last and may itself contain line breaks.
type LiveMessage struct {
	ID   ID
	Type event.Type
	Data string
}

// EncodeLive returns the live message for an event, as the publish script
// builds it.
func EncodeLive(id ID, typ event.Type, data string) string {
	var b strings.Builder
	b.Grow(len(data) + len(typ) + 28)
	b.WriteString(strconv.Itoa(Version))
	b.WriteByte('\n')
	b.Write(id.AppendTo(make([]byte, 0, 24)))
	b.WriteByte('\n')
	b.WriteString(string(typ))
	b.WriteByte('\n')
	b.WriteString(data)
	return b.String()
}

// DecodeLive parses a live message. The Data of the result shares memory
// with payload.
func DecodeLive(payload string) (LiveMessage, error) {
	version, rest, ok := strings.Cut(payload, "\n")
	if !ok {
		return LiveMessage{}, ErrInvalidLive
	}
	if version != "1" {
		return LiveMessage{}, ErrLiveVersion
	}
	rawID, rest, ok := strings.Cut(rest, "\n")
	if !ok {
		return LiveMessage{}, ErrInvalidLive
	}
	typ, data, ok := strings.Cut(rest, "\n")
	if !ok || typ == "" || !validType(typ) {
		return LiveMessage{}, ErrInvalidLive
	}
	id, err := ParseID(rawID)
	if err != nil {
		return LiveMessage{}, ErrInvalidLive
	}
	return LiveMessage{ID: id, Type: event.Type(typ), Data: data}, nil
}

// validType accepts the types the script publishes; anything else in a
// live message means it was not written by the script.
func validType(t string) bool {
	switch event.Type(t) {
	case event.TypeStatus, event.TypeProgress, event.TypeError, event.TypeComplete:
		return true
	}
	return false
}
