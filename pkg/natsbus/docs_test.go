package natsbus_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/zdm-io/zdm/pkg/natsbus"
)

// TestBusIsDocumented reads the tables of docs/architecture.md's section
// on the bus: every stream and bucket natsbus declares has a row there,
// named in its first cell.
func TestBusIsDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "architecture.md"))
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(doc), "\n## The bus\n")
	require.True(t, ok, "docs/architecture.md has no section \"## The bus\"")
	section, _, _ = strings.Cut(section, "\n## ")

	documented := map[string]bool{}
	for line := range strings.Lines(section) {
		// | `zdm_migrations` | migration ID | `zdm.v1.Migration` | ...
		cells := strings.Split(line, "|")
		if len(cells) < 3 || strings.TrimSpace(cells[0]) != "" {
			continue
		}
		documented[strings.Trim(strings.TrimSpace(cells[1]), "`")] = true
	}
	var missing []string
	for _, s := range natsbus.Streams(1, natsbus.ChangeLimits{}) {
		if !documented[s.Name] {
			missing = append(missing, "stream "+s.Name)
		}
	}
	for _, b := range natsbus.Buckets() {
		if !documented[b.Name] {
			missing = append(missing, "bucket "+b.Name)
		}
	}
	require.Empty(t, missing, "docs/architecture.md, section \"The bus\": a row for each, who writes, who reads, retention")
}
