package publisher_test

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/publisher"
)

func ExamplePublisher() {
	srv, _ := miniredis.Run() // any Redis: single, Sentinel or Cluster
	defer srv.Close()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	job := publisher.New(rdb).Job("abc")
	if _, err := job.Register(ctx); err != nil { // status pending: the job now exists for gateways
		fmt.Println(err)
		return
	}
	_, _ = job.Status(ctx, event.StatusProcessing)
	for step := 1; step <= 2; step++ {
		_, _ = job.Progress(ctx, publisher.Step{Step: step, Total: 2, Name: "Aggregating"})
	}
	_, _ = job.Complete(ctx, "r-1", json.RawMessage(`{"rows":2}`))

	// Each call wrote one entry to the job's stream.
	entries, _ := rdb.XRange(ctx, "ssegate:{abc}:events", "-", "+").Result()
	for _, e := range entries {
		fmt.Println(e.Values["type"])
	}
	_, err := job.Progress(ctx, publisher.Step{Step: 2, Total: 2})
	fmt.Println(err)
	// Output:
	// status
	// status
	// progress
	// progress
	// complete
	// publisher: progress job "abc": job already finished
}
