package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/ssegate/ssegate/pkg/event"
	"github.com/ssegate/ssegate/publisher"
)

// Codes of the simulated failures.
const (
	CodeUpstreamTimeout = "UPSTREAM_TIMEOUT" // failAtStep was reached
	CodeWorkerStopped   = "WORKER_STOPPED"   // Close stopped the job
)

// A stage is one step of the simulated report: its name, shown while it
// runs, and its duration at scale 1. Durations are uneven on purpose, so the
// estimate of the time left moves as a real one does.
type stage struct {
	name string
	dur  time.Duration
}

var stages = [...]stage{
	{"Fetching data", 1600 * time.Millisecond},
	{"Validating", 700 * time.Millisecond},
	{"Aggregating", 2400 * time.Millisecond},
	{"Computing trends", 1200 * time.Millisecond},
	{"Detecting anomalies", 1900 * time.Millisecond},
	{"Building charts", 900 * time.Millisecond},
	{"Rendering tables", 1400 * time.Millisecond},
	{"Writing summary", 800 * time.Millisecond},
}

// After the last step the worker shows this name while it assembles the
// report.
const (
	finalizing  = "Finalizing"
	finalizeDur = 400 * time.Millisecond
)

// jobSpec is what one simulated job does.
type jobSpec struct {
	steps  int     // 1..MaxSteps
	failAt int     // 0: succeed; else fail during this step
	scale  float64 // multiplies every duration
}

// duration is base at the job's scale, with ±20 % jitter.
func (s jobSpec) duration(base time.Duration) time.Duration {
	return time.Duration(float64(base) * s.scale * (0.8 + 0.4*rand.Float64()))
}

// run simulates one job to its end. A job stopped by Close is failed, so its
// watchers are not left waiting for a worker that is gone.
func (d *Demo) run(ctx context.Context, job *publisher.Job, spec jobSpec) {
	err := simulate(ctx, job, spec)
	switch {
	case err == nil:
		d.log.Debug("demo job finished", "job", job.ID())
	case ctx.Err() != nil:
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_, ferr := job.Fail(fctx, "The demo worker stopped before the report was done.", CodeWorkerStopped, true)
		if ferr != nil && !errors.Is(ferr, publisher.ErrJobFinished) {
			d.log.Warn("demo: fail stopped job", "job", job.ID(), "err", ferr)
		}
	default:
		d.log.Warn("demo job aborted", "job", job.ID(), "err", err)
	}
}

// simulate publishes a job's events as a report worker would: processing,
// then after each step the steps done and the name of the step now running
// (step 0 first, before any is done), then the report, or a failure during
// step spec.failAt.
func simulate(ctx context.Context, job *publisher.Job, spec jobSpec) error {
	plan := stages[:spec.steps]
	total := len(plan)
	if _, err := job.Status(ctx, event.StatusProcessing); err != nil {
		return err
	}
	if _, err := job.Progress(ctx, publisher.Step{Step: 0, Total: total, Name: plan[0].name}); err != nil {
		return err
	}
	for i, st := range plan {
		if i+1 == spec.failAt {
			if err := sleep(ctx, spec.duration(st.dur)/2); err != nil {
				return err
			}
			_, err := job.Fail(ctx, st.name+": the upstream data source did not answer within 30 s.", CodeUpstreamTimeout, true)
			return err
		}
		if err := sleep(ctx, spec.duration(st.dur)); err != nil {
			return err
		}
		next := finalizing
		if i+1 < total {
			next = plan[i+1].name
		}
		if _, err := job.Progress(ctx, publisher.Step{Step: i + 1, Total: total, Name: next}); err != nil {
			return err
		}
	}
	if err := sleep(ctx, spec.duration(finalizeDur)); err != nil {
		return err
	}
	report, err := json.Marshal(newReport(time.Now()))
	if err != nil {
		return err
	}
	_, err = job.Complete(ctx, "r-"+strings.TrimPrefix(job.ID(), "demo-"), report)
	return err
}

// report is the simulated report: a quarter's sales by region.
type report struct {
	Title       string          `json:"title"`
	Period      string          `json:"period"`
	GeneratedAt event.Timestamp `json:"generatedAt"`
	Currency    string          `json:"currency"`
	Rows        []reportRow     `json:"rows"`
	Totals      reportRow       `json:"totals"`
	Highlights  []string        `json:"highlights"`
}

type reportRow struct {
	Region  string  `json:"region"`
	Orders  int     `json:"orders"`
	Revenue float64 `json:"revenue"`
	Change  float64 `json:"change"` // against the quarter before, in percent
}

var regions = []string{"North America", "Europe", "Asia Pacific", "Latin America", "Middle East & Africa"}

// newReport makes a plausible report on the quarter before now.
func newReport(now time.Time) report {
	now = now.UTC()
	q := (int(now.Month())-1)/3 + 1
	year := now.Year()
	if q--; q == 0 {
		q, year = 4, year-1
	}
	r := report{
		Title:       "Quarterly sales by region",
		Period:      fmt.Sprintf("Q%d %d", q, year),
		GeneratedAt: event.At(now),
		Currency:    "EUR",
		Totals:      reportRow{Region: "Total"},
	}
	var before float64
	best, worst := -1, -1
	for i, name := range regions {
		orders := 600 + rand.IntN(4400)
		revenue := round2(float64(orders) * (45 + 110*rand.Float64()))
		change := round1(-12 + 30*rand.Float64())
		r.Rows = append(r.Rows, reportRow{Region: name, Orders: orders, Revenue: revenue, Change: change})
		r.Totals.Orders += orders
		r.Totals.Revenue += revenue
		before += revenue / (1 + change/100)
		if best < 0 || change > r.Rows[best].Change {
			best = i
		}
		if worst < 0 || change < r.Rows[worst].Change {
			worst = i
		}
	}
	r.Totals.Revenue = round2(r.Totals.Revenue)
	r.Totals.Change = round1((r.Totals.Revenue/before - 1) * 100)
	r.Highlights = []string{
		fmt.Sprintf("%s grew fastest (%s).", r.Rows[best].Region, percent(r.Rows[best].Change)),
		fmt.Sprintf("%s %s (%s).", r.Rows[worst].Region, map[bool]string{true: "grew least", false: "declined most"}[r.Rows[worst].Change >= 0], percent(r.Rows[worst].Change)),
		fmt.Sprintf("Revenue %s on the quarter before.", percent(r.Totals.Change)),
	}
	return r
}

// percent formats a change with its sign and a true minus: "+1.5 %", "−2.0 %".
func percent(f float64) string {
	if f < 0 {
		return fmt.Sprintf("\u2212%.1f %%", -f)
	}
	return fmt.Sprintf("+%.1f %%", f)
}

func round1(f float64) float64 { return math.Round(f*10) / 10 }
func round2(f float64) float64 { return math.Round(f*100) / 100 }
