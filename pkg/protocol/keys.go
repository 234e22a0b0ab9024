// Package protocol is ssegate's Redis protocol, version 1: the key names of a
// job, the state hash fields, the stream entry IDs, the atomic publish script
// and the live (pub/sub) message codec. The publisher and the gateway share
// it; docs/protocol.md describes it for workers written in other languages.
//
// Everything here is stateless or immutable and safe for concurrent use.
package protocol

import (
	"errors"
	"strings"
)

// Version is the protocol version. It is the first line of every live
// message and an argument of the publish script, which refuses others.
const Version = 1

// DefaultPrefix is the default key prefix.
const DefaultPrefix = "ssegate"

// MaxJobIDLen is the longest job ID accepted.
const MaxJobIDLen = 128

// ErrInvalidJobID is returned for a job ID that is empty, longer than
// MaxJobIDLen, or has a character outside [A-Za-z0-9._:-].
var ErrInvalidJobID = errors.New("invalid job ID: want 1-128 characters of [A-Za-z0-9._:-]")

// ValidJobID reports whether id is a valid job ID. The allowed characters
// never need escaping in a URL, a Redis key or an SSE field, and exclude the
// braces of a Redis Cluster hash tag.
func ValidJobID(id string) bool {
	if len(id) == 0 || len(id) > MaxJobIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

// Keys names the Redis keys and channels of jobs under one prefix. The job
// ID is a hash tag ({JOB}), so every key of a job is in one Cluster slot.
// The zero value uses DefaultPrefix.
type Keys struct {
	prefix string
}

// NewKeys returns the key namer for prefix; an empty prefix means
// DefaultPrefix.
func NewKeys(prefix string) Keys {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return Keys{prefix: prefix}
}

// Prefix returns the key prefix.
func (k Keys) Prefix() string {
	if k.prefix == "" {
		return DefaultPrefix
	}
	return k.prefix
}

// Events is the job's stream: every event, fields "type" and "data".
func (k Keys) Events(job string) string { return k.key(job, "events") }

// State is the job's state hash (see the Field constants).
func (k Keys) State(job string) string { return k.key(job, "state") }

// Live is the job's pub/sub channel: one live message per event.
func (k Keys) Live(job string) string { return k.key(job, "live") }

// JobFromLive returns the job ID of a live channel name, and whether the
// name is one.
func (k Keys) JobFromLive(channel string) (string, bool) {
	p := k.Prefix()
	if len(channel) < len(p)+len(":{}:live") || !strings.HasPrefix(channel, p) ||
		channel[len(p):len(p)+2] != ":{" || !strings.HasSuffix(channel, "}:live") {
		return "", false
	}
	return channel[len(p)+2 : len(channel)-len("}:live")], true
}

// Idempotency is the key recording the publish made with an idempotency
// key, for its window.
func (k Keys) Idempotency(job, key string) string { return k.key(job, "idem:"+key) }

// Canary names a channel that carries no job: gateways send themselves
// messages on it to prove their pub/sub connections deliver.
func (k Keys) Canary(name string) string { return k.Prefix() + ":canary:" + name }

func (k Keys) key(job, kind string) string {
	p := k.Prefix()
	var b strings.Builder
	b.Grow(len(p) + len(job) + len(kind) + 4)
	b.WriteString(p)
	b.WriteString(":{")
	b.WriteString(job)
	b.WriteString("}:")
	b.WriteString(kind)
	return b.String()
}

// Fields of the state hash.
const (
	FieldStatus    = "status"     // pending, processing, completed or failed
	FieldProgress  = "progress"   // data of the latest progress event
	FieldResult    = "result"     // data of the terminal event (complete record or error)
	FieldReport    = "report"     // the report JSON, if the job completed with one
	FieldLastID    = "last_id"    // stream ID of the latest event
	FieldUpdatedAt = "updated_at" // Redis time of the latest event, Unix milliseconds
	FieldCreatedAt = "created_at" // Redis time of registration, Unix milliseconds
	FieldStartedAt = "started_at" // Redis time of the first processing status, Unix milliseconds
)
