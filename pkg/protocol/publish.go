package protocol

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/pkg/event"
)

// publishSource is the publish script. It is the protocol: docs/protocol.md
// quotes its contract, and a worker in any language may run it with EVAL.
//
//go:embed publish.lua
var publishSource string

// PublishScript is the atomic publish script of protocol version 1.
var PublishScript = redis.NewScript(publishSource)

// PublishSource returns the text of the publish script.
func PublishSource() string { return publishSource }

// Errors returned by the publish script (matched by their reply's first
// word). ErrBadKeys, ErrBadData and ErrBadReport are also ErrBadArgs, so a
// caller that tests only for ErrBadArgs sees every refused argument.
var (
	ErrJobExists   = errors.New("job already registered")
	ErrJobNotFound = errors.New("job not registered")
	ErrJobFinished = errors.New("job already finished")
	ErrBadArgs     = errors.New("publish script refused its arguments")
	// ErrIdempotencyKeyReused: the idempotency key was used, within its
	// window, for a publish with other arguments.
	ErrIdempotencyKeyReused       = errors.New("idempotency key already used for another event")
	ErrBadKeys              error = &badArgs{"publish script refused its keys"}
	ErrBadData              error = &badArgs{"publish script refused the event's data"}
	ErrBadReport            error = &badArgs{"publish script refused the report"}
)

// badArgs is a refusal of one kind of argument; it is also ErrBadArgs.
type badArgs struct{ msg string }

func (e *badArgs) Error() string        { return e.msg }
func (e *badArgs) Is(target error) bool { return target == ErrBadArgs }

// scriptErrors maps the first word of a script error reply to its sentinel.
var scriptErrors = map[string]error{
	"SSEGATE_EXISTS":      ErrJobExists,
	"SSEGATE_NOT_FOUND":   ErrJobNotFound,
	"SSEGATE_FINISHED":    ErrJobFinished,
	"SSEGATE_KEYS":        ErrBadKeys,
	"SSEGATE_VERSION":     ErrBadArgs,
	"SSEGATE_BAD_ARGS":    ErrBadArgs,
	"SSEGATE_BAD_DATA":    ErrBadData,
	"SSEGATE_BAD_REPORT":  ErrBadReport,
	"SSEGATE_IDEMPOTENCY": ErrIdempotencyKeyReused,
}

// Op says whether a publish creates the job or adds to an existing one.
type Op string

// The publish operations.
const (
	OpRegister Op = "register" // create the job: the state hash must not exist
	OpPublish  Op = "publish"  // add an event: the job must exist and not be finished
)

// Defaults of the publish arguments.
const (
	DefaultMaxLen    = 1000
	DefaultRetention = time.Hour
	DefaultStaleTTL  = 24 * time.Hour
	// DefaultIdempotencyWindow is how long an idempotency key's publish is
	// remembered.
	DefaultIdempotencyWindow = time.Hour
	// MaxIdempotencyKeyLen is the longest idempotency key accepted.
	MaxIdempotencyKeyLen = 255
)

// PublishArgs are the arguments of one publish. Data must already be the
// event's JSON; the script adds the estimate to progress events whose data
// has the member "estimatedRemainingMs":null.
type PublishArgs struct {
	Op     Op
	Type   event.Type   // status, progress, error or complete
	Status event.Status // status events only: pending or processing
	Data   string       // the event's JSON (for complete: the CompleteRecord)
	Report string       // complete only: the report JSON, or "" for none
	Step   int          // progress only
	Total  int          // progress only

	MaxLen    int64         // approximate stream length kept; 0 means DefaultMaxLen
	StaleTTL  time.Duration // expiry while the job runs; 0 means DefaultStaleTTL
	Retention time.Duration // expiry after a terminal event; 0 means DefaultRetention
	Sharded   bool          // SPUBLISH instead of PUBLISH (Redis Cluster sharded pub/sub)

	// IdempotencyKey, when set, makes the publish idempotent: a publish
	// with the same key within IdempotencyWindow (0 means
	// DefaultIdempotencyWindow) returns the first one's ID and writes
	// nothing, or fails with ErrIdempotencyKeyReused if its Fingerprint
	// differs. Fingerprint identifies the event apart from its timestamp
	// (see publisher); "" matches any.
	IdempotencyKey    string
	IdempotencyWindow time.Duration
	Fingerprint       string
}

// ErrBadIdempotencyKey is returned for an idempotency key that is longer
// than MaxIdempotencyKeyLen or has a character outside printable ASCII.
var ErrBadIdempotencyKey = errors.New("idempotency key must be 1-255 printable ASCII characters")

// ValidIdempotencyKey reports whether key may be an idempotency key.
func ValidIdempotencyKey(key string) bool {
	if key == "" || len(key) > MaxIdempotencyKeyLen {
		return false
	}
	for i := range len(key) {
		if key[i] < 0x21 || key[i] > 0x7e {
			return false
		}
	}
	return true
}

// Publish runs the publish script for job and returns the new event's stream
// ID. It makes one round trip (EVALSHA, or EVAL the first time a server sees
// the script). Script refusals come back as ErrJobExists, ErrJobNotFound,
// ErrJobFinished or ErrBadArgs (some as ErrBadKeys, ErrBadData or
// ErrBadReport, which are also ErrBadArgs), wrapped.
func Publish(ctx context.Context, rdb redis.Scripter, keys Keys, job string, a PublishArgs) (string, error) {
	if a.MaxLen <= 0 {
		a.MaxLen = DefaultMaxLen
	}
	if a.StaleTTL <= 0 {
		a.StaleTTL = DefaultStaleTTL
	}
	if a.Retention <= 0 {
		a.Retention = DefaultRetention
	}
	pub := "PUBLISH"
	if a.Sharded {
		pub = "SPUBLISH"
	}
	ks := []string{keys.Events(job), keys.State(job), keys.Live(job)}
	args := []any{
		strconv.Itoa(Version), string(a.Op), string(a.Type), a.Data, string(a.Status), a.Report,
		a.Step, a.Total, a.MaxLen, a.StaleTTL.Milliseconds(), a.Retention.Milliseconds(), pub,
	}
	if a.IdempotencyKey != "" {
		if !ValidIdempotencyKey(a.IdempotencyKey) {
			return "", ErrBadIdempotencyKey
		}
		window := a.IdempotencyWindow
		if window <= 0 {
			window = DefaultIdempotencyWindow
		}
		ks = append(ks, keys.Idempotency(job, a.IdempotencyKey))
		args = append(args, window.Milliseconds(), a.Fingerprint)
	}
	res, err := PublishScript.Run(ctx, rdb, ks, args...).Text()
	if err != nil {
		return "", ScriptError(err)
	}
	return res, nil
}

// ScriptError maps an error reply of the publish script to its sentinel
// (wrapped with the script's message for ErrBadArgs); other errors are
// returned as they are.
func ScriptError(err error) error {
	var rerr redis.Error
	if errors.As(err, &rerr) {
		word, msg, _ := strings.Cut(rerr.Error(), " ")
		if sentinel, ok := scriptErrors[word]; ok {
			if errors.Is(sentinel, ErrBadArgs) {
				return fmt.Errorf("%w: %s", sentinel, msg)
			}
			return sentinel
		}
	}
	return err
}
