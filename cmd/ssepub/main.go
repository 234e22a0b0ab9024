// Command ssepub publishes one event of a job from a shell, with the same
// atomic script as the publisher library, and prints the event ID.
//
//	ssepub [--redis-url URL] [--key-prefix P] JOB register
//	ssepub [...] JOB status pending|processing
//	ssepub [...] JOB progress --step N --total M [--name TEXT]
//	ssepub [...] JOB complete --report-id R [--report FILE|-]
//	ssepub [...] JOB fail --code C --message M [--retryable]
//
// REDIS_URL and SSEGATE_KEY_PREFIX are the defaults of the flags. Errors go to
// stderr; the exit status is 1 for a failed publish and 2 for a usage or
// input error (found before anything reaches Redis).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/pkg/protocol"
	"github.com/ssegate/ssegate/pkg/redisurl"
	"github.com/ssegate/ssegate/publisher"
)

const defaultRedisURL = "redis://127.0.0.1:6379/0"

const usage = `usage: ssepub [--redis-url URL] [--key-prefix P] [--timeout D] JOB COMMAND [ARGS]

commands:
  register                                      create the job (status pending)
  status pending|processing                     publish a status change
  progress --step N --total M [--name TEXT]     publish progress (percentage and ETA computed)
  complete --report-id R [--report FILE|-]      finish the job, with an optional JSON report
  fail --code C --message M [--retryable]       finish the job as failed

Prints the event ID. Environment: REDIS_URL (default ` + defaultRedisURL + `),
SSEGATE_KEY_PREFIX (default ssegate).
`

// errUsage marks errors that exit with status 2.
var errUsage = errors.New("usage")

func main() {
	// go-redis logs dial failures itself; the error we print says it all.
	redis.SetLogger(quietLogger{})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	id, err := publish(ctx, args, getenv, stdin)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usage)
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "ssepub: %v\n\n%s", err, usage)
		return 2
	case err != nil:
		fmt.Fprintf(stderr, "ssepub: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, id)
	return 0
}

func usageErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, a...))
}

func publish(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader) (string, error) {
	global := flag.NewFlagSet("ssepub", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	redisURL := global.String("redis-url", envOr(getenv, "REDIS_URL", defaultRedisURL), "Redis URL")
	prefix := global.String("key-prefix", envOr(getenv, "SSEGATE_KEY_PREFIX", "ssegate"), "key prefix")
	timeout := global.Duration("timeout", 10*time.Second, "time limit of the publish")
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", err
		}
		return "", usageErr("%v", err)
	}
	rest := global.Args()
	if len(rest) < 2 {
		return "", usageErr("want JOB and COMMAND")
	}
	jobID, command, cmdArgs := rest[0], rest[1], rest[2:]
	if !protocol.ValidJobID(jobID) {
		return "", usageErr("%v, got %q", protocol.ErrInvalidJobID, jobID)
	}

	cfg, err := redisurl.Parse(*redisURL)
	if err != nil {
		return "", usageErr("--redis-url: %v", err)
	}
	// Build the call first, so a usage error never needs Redis.
	call, err := parseCommand(command, cmdArgs, stdin)
	if err != nil {
		return "", err
	}
	rdb := cfg.NewClient()
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	return call(ctx, publisher.New(rdb, publisher.WithKeyPrefix(*prefix)).Job(jobID))
}

type call func(context.Context, *publisher.Job) (string, error)

func parseCommand(command string, args []string, stdin io.Reader) (call, error) {
	fs := flag.NewFlagSet(command, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	switch command {
	case "register":
		if err := parseAll(fs, args, 0); err != nil {
			return nil, err
		}
		return func(ctx context.Context, j *publisher.Job) (string, error) { return j.Register(ctx) }, nil

	case "status":
		if err := parseAll(fs, args, 1); err != nil {
			return nil, err
		}
		s := event.Status(fs.Arg(0))
		if s != event.StatusPending && s != event.StatusProcessing {
			return nil, usageErr("status must be pending or processing, got %q (finish with complete or fail)", s)
		}
		return func(ctx context.Context, j *publisher.Job) (string, error) { return j.Status(ctx, s) }, nil

	case "progress":
		step := fs.Int("step", -1, "steps done")
		total := fs.Int("total", 0, "total steps")
		name := fs.String("name", "", "current step name")
		if err := parseAll(fs, args, 0); err != nil {
			return nil, err
		}
		if *total <= 0 || *step < 0 || *step > *total {
			return nil, usageErr("progress needs --step N and --total M with 0 <= N <= M and M > 0")
		}
		s := publisher.Step{Step: *step, Total: *total, Name: *name}
		return func(ctx context.Context, j *publisher.Job) (string, error) { return j.Progress(ctx, s) }, nil

	case "complete":
		reportID := fs.String("report-id", "", "report ID")
		reportFile := fs.String("report", "", "report JSON file, or - for stdin")
		if err := parseAll(fs, args, 0); err != nil {
			return nil, err
		}
		if *reportID == "" {
			return nil, usageErr("complete needs --report-id")
		}
		var report json.RawMessage
		if *reportFile != "" {
			b, err := readReport(*reportFile, stdin)
			if err != nil {
				return nil, usageErr("--report: %v", err)
			}
			if !json.Valid(b) {
				return nil, usageErr("--report %s: %v", *reportFile, publisher.ErrInvalidReport)
			}
			report = b
		}
		return func(ctx context.Context, j *publisher.Job) (string, error) { return j.Complete(ctx, *reportID, report) }, nil

	case "fail":
		code := fs.String("code", "", "machine-readable error code")
		message := fs.String("message", "", "human-readable message")
		retryable := fs.Bool("retryable", false, "whether retrying the job may help")
		if err := parseAll(fs, args, 0); err != nil {
			return nil, err
		}
		if *code == "" || *message == "" {
			return nil, usageErr("fail needs --code and --message")
		}
		return func(ctx context.Context, j *publisher.Job) (string, error) {
			return j.Fail(ctx, *message, *code, *retryable)
		}, nil
	}
	return nil, usageErr("unknown command %q", command)
}

// parseAll parses flags and wants exactly n positional arguments.
func parseAll(fs *flag.FlagSet, args []string, n int) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageErr("%s: %v", fs.Name(), err)
	}
	if fs.NArg() != n {
		return usageErr("%s: want %d argument(s), got %q", fs.Name(), n, strings.Join(fs.Args(), " "))
	}
	return nil
}

func readReport(name string, stdin io.Reader) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(io.LimitReader(stdin, 64<<20))
	}
	return os.ReadFile(name)
}

func envOr(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}

// quietLogger drops go-redis's internal log lines.
type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}
