package gateway

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ssegate/ssegate/pkg/event"
)

// The TypeScript JobSnapshot (typescript/src/events.ts) is checked against
// this fixture by typescript/test/shapes.test.ts, as the event types are
// against pkg/event's shapes.json. The descriptor format is the same.
var updateShapes = flag.Bool("update-shapes", false, "rewrite "+snapshotShapeFixture)

const (
	snapshotShapeFixture = "../typescript/test/fixtures/snapshot-shape.json"
	snapshotShapeRegen   = "go test ./gateway -run TestShapesSnapshotFixture -update-shapes"
)

type snapshotShapeField struct {
	Kind     string `json:"kind"`
	Nullable bool   `json:"nullable"`
	Optional bool   `json:"optional"`
}

// snapshotHolds names the raw JSON members of snapshotResponse that always
// hold one event (or null), as handleSnapshot fills them: they are objects,
// not any JSON. The test checks the sample against it.
var snapshotHolds = map[string]reflect.Type{
	"progress": reflect.TypeFor[event.ProgressEvent](),
	"error":    reflect.TypeFor[event.ErrorEvent](),
}

func TestShapesSnapshotFixture(t *testing.T) {
	now := time.Date(2026, 11, 27, 3, 40, 30, 123_000_000, time.UTC)
	last := event.NewProgress("job-1", 8, 8, "Rendering", now)
	last.EstimatedRemainingMs = new(int64(0))
	progress, _ := json.Marshal(last)
	reportID := "report-1"
	sample := snapshotResponse{
		JobID: "job-1", Status: event.StatusCompleted, Progress: progress, ReportID: &reportID,
		Error: json.RawMessage("null"), UpdatedAt: event.At(now), LastEventID: "1795750830123-0",
		Report: json.RawMessage(`{"rows":3}`),
	}
	st := reflect.TypeOf(sample)
	fields := map[string]snapshotShapeField{}
	for f := range st.Fields() {
		tag := f.Tag.Get("json")
		if !f.IsExported() || tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous || name == "" {
			t.Fatalf("snapshotResponse.%s: give it a JSON name", f.Name)
		}
		d := snapshotShapeField{Optional: strings.Contains(","+opts+",", ",omitempty,")}
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			d.Nullable, ft = true, ft.Elem()
		}
		switch {
		case ft == reflect.TypeFor[json.RawMessage]():
			d.Kind, d.Nullable = "any", true
			if _, ok := snapshotHolds[name]; ok {
				d.Kind = "object"
			}
		case ft == reflect.TypeFor[event.Timestamp]() || ft.Kind() == reflect.String:
			d.Kind = "string"
		case ft.Kind() == reflect.Bool:
			d.Kind = "boolean"
		default:
			t.Fatalf("snapshotResponse.%s: type %s is not described; extend this test and typescript/test/shapes.test.ts", f.Name, ft)
		}
		fields[name] = d
	}

	// The members that hold an event decode as that event, exactly.
	raw, _ := json.Marshal(sample)
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil {
		t.Fatal(err)
	}
	for name, typ := range snapshotHolds {
		if _, ok := fields[name]; !ok {
			t.Fatalf("snapshotHolds names %q, which snapshotResponse no longer has", name)
		}
		if string(members[name]) == "null" {
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(members[name]))
		dec.DisallowUnknownFields()
		if err := dec.Decode(reflect.New(typ).Interface()); err != nil {
			t.Fatalf("sample %s is not a %s: %v", name, typ, err)
		}
	}

	fixture := map[string]any{"JobSnapshot": map[string]any{"fields": fields, "sample": sample}}
	want, err := json.MarshalIndent(fixture, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, '\n')
	if *updateShapes {
		if err := os.WriteFile(snapshotShapeFixture, want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(snapshotShapeFixture)
	if err != nil {
		t.Fatalf("%v\nGenerate it with: %s", err, snapshotShapeRegen)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is out of date with snapshotResponse:\n%s\nRegenerate it with: %s\n"+
			"then make JobSnapshot in typescript/src/events.ts match (cd typescript && npm test).",
			snapshotShapeFixture, snapshotShapeDiff(got, want), snapshotShapeRegen)
	}
}

// snapshotShapeDiff says where file and fresh first differ, line by line.
func snapshotShapeDiff(file, fresh []byte) string {
	lf, ln := strings.Split(string(file), "\n"), strings.Split(string(fresh), "\n")
	for i := range max(len(lf), len(ln)) {
		var f, n string
		if i < len(lf) {
			f = lf[i]
		}
		if i < len(ln) {
			n = ln[i]
		}
		if f != n {
			return fmt.Sprintf("line %d: the file has %q, the Go types give %q", i+1, f, n)
		}
	}
	return "(no line differs)"
}
