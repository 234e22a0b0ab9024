// Command plot draws ssebench results: it reads the CSV rows that
// `ssebench --csv FILE` appends and writes a PNG with two panels against the
// number of clients — end-to-end latency (p50, p90, p99) and deliveries per
// second — one line per mode (gateway, floor) and label (labels that differ
// only by a trailing "-<number>", such as the client count, share a line).
//
//	go run ./cmd/ssebench/plot --out bench.png runs.csv [more.csv...]
package main

import (
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "plot: %v\n", err)
		os.Exit(1)
	}
}

// row is what the plot needs of one ssebench result.
type row struct {
	series            string // mode and label
	clients           float64
	p50, p90, p99     float64 // ms
	deliveriesPerSec  float64
	hasLoad, resultOK bool // a run with a load window; it passed its checks
}

func run(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("plot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "ssebench.png", "PNG file to write")
	filter := fs.String("label", "", "only rows whose label contains this")
	logY := fs.Bool("log", true, "logarithmic latency axis")
	failed := fs.Bool("include-failed", false, "also plot runs that failed their checks (lost events, failed clients)")
	width := fs.Float64("width", 800, "image width in points")
	height := fs.Float64("height", 900, "image height in points")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: plot [--out FILE.png] [--label TEXT] [--log=false] results.csv...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errors.New("no CSV file given")
	}
	var rows []row
	for _, name := range fs.Args() {
		rs, err := readRows(name)
		if err != nil {
			return err
		}
		for _, r := range rs {
			switch {
			case !r.hasLoad || !strings.Contains(r.series, *filter):
			case !r.resultOK && !*failed:
				fmt.Fprintf(stderr, "plot: skipping a failed run (%s, %v clients); --include-failed plots it\n", r.series, r.clients)
			default:
				rows = append(rows, r)
			}
		}
	}
	if len(rows) == 0 {
		return errors.New("no result with a load window in the input")
	}
	lat, thr, err := plots(rows, *logY)
	if err != nil {
		return err
	}
	img := vgimg.New(vg.Length(*width), vg.Length(*height))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadTop: 4, PadBottom: 4, PadLeft: 4, PadRight: 4, PadY: 12}
	canvases := plot.Align([][]*plot.Plot{{lat}, {thr}}, tiles, dc)
	lat.Draw(canvases[0][0])
	thr.Draw(canvases[1][0])
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// readRows reads an ssebench CSV file by its header's column names.
func readRows(name string) ([]row, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	recs, err := r.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(recs) < 2 {
		return nil, nil
	}
	col := map[string]int{}
	for i, h := range recs[0] {
		col[h] = i
	}
	for _, need := range []string{"mode", "label", "ok", "clients", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "delivery_per_sec", "publish_window_s"} {
		if _, ok := col[need]; !ok {
			return nil, fmt.Errorf("%s: no column %q: not an ssebench CSV", name, need)
		}
	}
	var out []row
	for n, rec := range recs[1:] {
		if len(rec) != len(recs[0]) {
			return nil, fmt.Errorf("%s: row %d has %d fields, the header %d", name, n+2, len(rec), len(recs[0]))
		}
		num := func(c string) float64 { v, _ := strconv.ParseFloat(rec[col[c]], 64); return v }
		series := rec[col["mode"]]
		if l := seriesLabel(rec[col["label"]]); l != "" {
			series += " " + l
		}
		out = append(out, row{
			series: series, clients: num("clients"),
			p50: num("latency_p50_ms"), p90: num("latency_p90_ms"), p99: num("latency_p99_ms"),
			deliveriesPerSec: num("delivery_per_sec"),
			hasLoad:          num("publish_window_s") > 0,
			resultOK:         rec[col["ok"]] == "true",
		})
	}
	return out, nil
}

// plots builds the latency and throughput panels.
func plots(rows []row, logY bool) (lat, thr *plot.Plot, err error) {
	bySeries := map[string][]row{}
	var names []string
	for _, r := range rows {
		if _, ok := bySeries[r.series]; !ok {
			names = append(names, r.series)
		}
		bySeries[r.series] = append(bySeries[r.series], r)
	}
	sort.Strings(names)

	lat = plot.New()
	lat.Title.Text = "ssebench: end-to-end latency (publish -> client parsed)"
	lat.X.Label.Text = "clients"
	lat.Y.Label.Text = "latency (ms)"
	if logY {
		lat.Y.Scale = plot.LogScale{}
		lat.Y.Tick.Marker = plot.TickerFunc(ticks125)
	}
	lat.Legend.Top, lat.Legend.Left = true, true
	thr = plot.New()
	thr.Title.Text = "deliveries per second"
	thr.X.Label.Text = "clients"
	thr.Y.Label.Text = "deliveries/s"
	thr.Legend.Top, thr.Legend.Left = true, true

	for i, name := range names {
		rs := bySeries[name]
		sort.Slice(rs, func(a, b int) bool { return rs[a].clients < rs[b].clients })
		// One color per series; p50 solid, p90 dashed, p99 dotted.
		for k, q := range []struct {
			name string
			get  func(row) float64
		}{{"p50", func(r row) float64 { return r.p50 }}, {"p90", func(r row) float64 { return r.p90 }}, {"p99", func(r row) float64 { return r.p99 }}} {
			if err := addLine(lat, name+" "+q.name, rs, q.get, i, k, logY); err != nil {
				return nil, nil, err
			}
		}
		if err := addLine(thr, name, rs, func(r row) float64 { return r.deliveriesPerSec }, i, 0, false); err != nil {
			return nil, nil, err
		}
	}
	return lat, thr, nil
}

func addLine(p *plot.Plot, name string, rs []row, y func(row) float64, color, style int, positive bool) error {
	var pts plotter.XYs
	for _, r := range rs {
		v := y(r)
		if positive && v <= 0 {
			continue // a log axis cannot show it
		}
		pts = append(pts, plotter.XY{X: r.clients, Y: v})
	}
	if len(pts) == 0 {
		return nil
	}
	l, s, err := plotter.NewLinePoints(pts)
	if err != nil {
		return err
	}
	l.Color, s.Color = plotutil.Color(color), plotutil.Color(color)
	l.Dashes = [][]vg.Length{nil, {vg.Points(6), vg.Points(3)}, {vg.Points(1.5), vg.Points(2.5)}}[style%3]
	s.Shape = plotutil.Shape(style)
	p.Add(l, s)
	p.Legend.Add(name, l, s)
	return nil
}

// ticks125 labels a log axis at 1, 2 and 5 times each power of ten.
func ticks125(lo, hi float64) []plot.Tick {
	var ts []plot.Tick
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, e)
			if v >= lo && v <= hi {
				ts = append(ts, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'g', -1, 64)})
			}
		}
	}
	return ts
}

// seriesLabel drops a trailing "-<number>" from a label, so runs labeled
// broadcast-1000, broadcast-2500 and broadcast-5000 make one line.
func seriesLabel(label string) string {
	i := strings.LastIndexByte(label, '-')
	if i <= 0 {
		return label
	}
	if _, err := strconv.Atoi(label[i+1:]); err != nil {
		return label
	}
	return label[:i]
}
