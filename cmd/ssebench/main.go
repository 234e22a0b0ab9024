// Command ssebench is ssegate's load generator. It opens N SSE clients over
// K jobs against one or more gateways, publishes progress events through
// the publisher library at a given rate (each stamped with its publish
// time), and reports connect time, deliveries/s, end-to-end latency
// percentiles (publish -> client parsed), lost/duplicated/out-of-order
// events per job, the gateways' RSS and CPU idle and under load, RSS per
// connection, CPU per 100k deliveries, Redis command counts per event, and
// its own CPU.
//
//	ssebench [run] --gateway URL[,URL] --redis-url URL --clients N --jobs K --rate R --duration D
//	ssebench floor --clients N --jobs K --rate R --duration D
//
// "floor" runs the same clients against the thinnest possible server (raw
// TCP, pre-encoded frames, no HTTP framework, no Redis) in a child process,
// so each figure can be read as a fraction of what the machine can do at
// all. See --help for every flag.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
)

func main() {
	if os.Getenv(floorChildEnv) == "1" || len(os.Args) > 1 && os.Args[1] == "floor-server" {
		os.Exit(floorServerMain(floorArgs(os.Args[1:]), os.Stdin, os.Stdout, os.Stderr))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// floorArgs drops the floor-server subcommand name.
func floorArgs(args []string) []string {
	if len(args) > 0 && args[0] == "floor-server" {
		return args[1:]
	}
	return args
}

// run runs ssebench with args (without the program name) and returns the
// exit status: 0 when the run passed its checks, 1 when not, 2 for usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	floor := false
	if len(args) > 0 {
		switch args[0] {
		case "run":
			args = args[1:]
		case "floor":
			floor, args = true, args[1:]
		}
	}
	cfg, err := parseConfig(floor, args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "ssebench: %v\n", err)
		return 2
	}
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "ssebench: %v\n", err)
			return 2
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "ssebench: %v\n", err)
			return 2
		}
		defer pprof.StopCPUProfile()
	}
	res, err := newBench(cfg, stderr).run(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "ssebench: %v\n", err)
		return 1
	}
	table := stdout
	if cfg.jsonOut {
		table = stderr
	}
	writeTable(table, res)
	if cfg.jsonOut {
		if err := writeJSON(stdout, res); err != nil {
			fmt.Fprintf(stderr, "ssebench: %v\n", err)
			return 1
		}
	}
	if cfg.csvPath != "" {
		if err := appendCSV(cfg.csvPath, res); err != nil {
			fmt.Fprintf(stderr, "ssebench: %v\n", err)
			return 1
		}
	}
	if !res.OK {
		return 1
	}
	return 0
}
