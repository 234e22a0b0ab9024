package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestREADMEConfigurationTable: the README's configuration table has a row
// for every flag, with its environment twin, and no row for a flag that
// does not exist.
func TestREADMEConfigurationTable(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	start := strings.Index(readme, "\n## Configuration\n")
	if start < 0 {
		t.Fatal(`README.md has no "## Configuration" section`)
	}
	section := readme[start+1:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	rows := map[string]string{} // flag → env
	for _, m := range regexp.MustCompile("(?m)^\\| `--([a-z0-9-]+)` \\| `([A-Z0-9_]+)` \\|").FindAllStringSubmatch(section, -1) {
		rows[m[1]] = m[2]
	}
	for name, env := range envTwins {
		got, ok := rows[name]
		switch {
		case !ok:
			t.Errorf("the configuration table has no row for --%s (%s)", name, env)
		case got != env:
			t.Errorf("the configuration table gives --%s the env %s, want %s", name, got, env)
		}
	}
	for name := range rows {
		if _, ok := envTwins[name]; !ok {
			t.Errorf("the configuration table lists --%s, which the gateway does not have", name)
		}
	}
}
