package main

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPlot(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in := filepath.Join(dir, "runs.csv")
	csv := "mode,label,ok,clients,latency_p50_ms,latency_p90_ms,latency_p99_ms,delivery_per_sec,publish_window_s,extra\n" +
		"gateway,broadcast,true,1000,1.5,3,9,20000,30,x\n" +
		"gateway,broadcast,true,5000,4,8,20,100000,30,x\n" +
		"floor,broadcast,true,1000,0.5,1,3,20000,30,x\n" +
		"floor,broadcast,true,5000,1,2,6,100000,30,x\n" +
		"gateway,idle,true,10000,0,0,0,0,0,x\n" +
		"gateway,broadcast,false,8000,9,18,40,150000,30,x\n"
	if err := os.WriteFile(in, []byte(csv), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.png")
	var stderr bytes.Buffer
	if err := run([]string{"--out", out, in}, &stderr); err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "skipping a failed run") {
		t.Errorf("a failed run was not reported as skipped: %q", stderr.String())
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 500 || b.Dy() < 500 {
		t.Errorf("image is %v", b)
	}

	if err := run([]string{"--out", out, filepath.Join(dir, "missing.csv")}, &stderr); err == nil {
		t.Error("a missing file gave no error")
	}
	bad := filepath.Join(dir, "bad.csv")
	_ = os.WriteFile(bad, []byte("a,b\n1,2\n"), 0o644)
	if err := run([]string{"--out", out, bad}, &stderr); err == nil {
		t.Error("a CSV without ssebench columns gave no error")
	}
}
