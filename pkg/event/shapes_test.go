package event_test

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

// The TypeScript event types (typescript/src/events.ts) are checked against
// this fixture by typescript/test/shapes.test.ts, so the two languages cannot
// drift apart silently: change a Go shape, regenerate, and the TS test fails
// until events.ts follows.
var updateShapes = flag.Bool("update-shapes", false, "rewrite "+shapesFixture)

const (
	shapesFixture = "../../typescript/test/fixtures/shapes.json"
	shapesRegen   = "go test ./pkg/event -run TestShapesFixture -update-shapes"
)

// shapeField describes one JSON member: its JSON kind ("string", "number",
// "boolean", "object" or "any"), whether it may be null (a pointer, or raw
// JSON) and whether it may be absent (omitempty).
type shapeField struct {
	Kind     string `json:"kind"`
	Nullable bool   `json:"nullable"`
	Optional bool   `json:"optional"`
}

type shape struct {
	Fields map[string]shapeField `json:"fields"`
	Sample any                   `json:"sample"`
}

func TestShapesFixture(t *testing.T) {
	now := time.Date(2026, 11, 27, 3, 40, 30, 123_000_000, time.UTC)
	eta := int64(42_000)
	progress := event.NewProgress("job-1", 2, 8, "Aggregating", now)
	progress.EstimatedRemainingMs = &eta
	report := json.RawMessage(`{"rows":3}`)
	samples := map[string]any{
		"StatusEvent":    event.NewStatus("job-1", event.StatusProcessing, now),
		"ProgressEvent":  progress,
		"ErrorEvent":     event.NewError("job-1", "upstream timed out", "UPSTREAM_TIMEOUT", true, now),
		"CompleteEvent":  event.NewCompleteRecord("job-1", "report-1", true, now).ForClient(report),
		"HeartbeatEvent": event.NewHeartbeat(now),
		"ResetEvent":     event.NewReset("job-1", event.ResetHistoryTrimmed, now),
	}
	shapes := map[string]shape{}
	for name, v := range samples {
		if got := reflect.TypeOf(v).Name(); got != name {
			t.Fatalf("sample %s is a %s", name, got)
		}
		shapes[name] = shape{Fields: shapeFields(t, reflect.TypeOf(v)), Sample: v}
	}
	checkShapesFixture(t, shapes)
}

// shapeFields reads the JSON members of struct type st from its fields and
// their tags, as encoding/json does (no embedded structs here).
func shapeFields(t *testing.T, st reflect.Type) map[string]shapeField {
	t.Helper()
	fields := map[string]shapeField{}
	for f := range st.Fields() {
		tag := f.Tag.Get("json")
		if !f.IsExported() || tag == "-" {
			continue
		}
		if f.Anonymous {
			t.Fatalf("%s.%s: embedded fields are not described; add them to shapeFields", st.Name(), f.Name)
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" {
			name = f.Name
		}
		kind, nullable := shapeKind(t, f.Type)
		fields[name] = shapeField{Kind: kind, Nullable: nullable, Optional: strings.Contains(","+opts+",", ",omitempty,")}
	}
	return fields
}

var marshalerType = reflect.TypeFor[json.Marshaler]()

// shapeKind is the JSON kind of values of type ft, and whether they can be
// null. A json.Marshaler is classified by what its zero value marshals to:
// event.Timestamp is a string, json.RawMessage (null) is any JSON at all.
func shapeKind(t *testing.T, ft reflect.Type) (kind string, nullable bool) {
	t.Helper()
	if ft.Kind() == reflect.Pointer {
		kind, _ = shapeKind(t, ft.Elem())
		return kind, true
	}
	if ft.Implements(marshalerType) {
		b, err := json.Marshal(reflect.Zero(ft).Interface())
		if err != nil || len(b) == 0 {
			t.Fatalf("%s: marshalling its zero value: %v", ft, err)
		}
		switch b[0] {
		case '"':
			return "string", false
		case 'n':
			return "any", true
		case 't', 'f':
			return "boolean", false
		case '{':
			return "object", false
		}
		t.Fatalf("%s marshals as %s: not a kind shapes.json knows", ft, b)
	}
	switch ft.Kind() {
	case reflect.String:
		return "string", false
	case reflect.Bool:
		return "boolean", false
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return "number", false
	case reflect.Struct:
		return "object", false
	}
	t.Fatalf("%s: kind %s is not described by shapes.json; extend shapeKind and typescript/test/shapes.test.ts", ft, ft.Kind())
	return "", false
}

// checkShapesFixture compares shapes with the fixture, or rewrites it with
// -update-shapes.
func checkShapesFixture(t *testing.T, shapes map[string]shape) {
	t.Helper()
	want, err := json.MarshalIndent(shapes, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, '\n')
	if *updateShapes {
		if err := os.WriteFile(shapesFixture, want, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", shapesFixture)
		return
	}
	got, err := os.ReadFile(shapesFixture)
	if err != nil {
		t.Fatalf("%v\nGenerate it with: %s", err, shapesRegen)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is out of date with the Go event types:\n%s\n"+
			"Regenerate it with: %s\n"+
			"then make typescript/src/events.ts match (cd typescript && npm test).",
			shapesFixture, firstDiff(got, want), shapesRegen)
	}
}

// firstDiff says where file and fresh first differ, line by line.
func firstDiff(file, fresh []byte) string {
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
