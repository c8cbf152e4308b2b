package app

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// envOf is the environment variable that sets flag name.
func envOf(name string) string {
	return "ZDM_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// TestDefaultsAreDocumented reads the flag table of docs/operations.md:
// every flag it lists exists, under the environment variable it names,
// with the default it states.
func TestDefaultsAreDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "..", "..", "docs", "operations.md"))
	require.NoError(t, err)
	var c Config
	fs := flag.NewFlagSet("zdm", flag.ContinueOnError)
	c.RegisterFlags(fs)
	host, err := os.Hostname()
	require.NoError(t, err)

	code := regexp.MustCompile("`([^`]*)`")
	documented, inTable := 0, false
	for line := range strings.Lines(string(doc)) {
		if strings.HasPrefix(line, "| flag | env | default |") {
			inTable = true
			continue
		}
		if inTable && !strings.HasPrefix(line, "|") {
			break
		}
		// | `--grpc-addr` | `ZDM_GRPC_ADDR` | `127.0.0.1:7400` | meaning |
		cells := strings.Split(line, "|")
		if !inTable || len(cells) < 5 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`-") {
			continue
		}
		var flags, envs []string
		for _, m := range code.FindAllStringSubmatch(cells[1], -1) {
			flags = append(flags, strings.TrimLeft(m[1], "-"))
		}
		for _, m := range code.FindAllStringSubmatch(cells[2], -1) {
			envs = append(envs, m[1])
		}
		def := strings.Trim(strings.TrimSpace(cells[3]), "`")
		require.Len(t, envs, len(flags), "row %q: one variable per flag", line)
		for i, name := range flags {
			documented++
			f := fs.Lookup(name)
			require.NotNil(t, f, "docs/operations.md lists --%s, which zdm does not have", name)
			require.Equal(t, envOf(name), envs[i], "--%s: the variable that sets it", name)
			switch def {
			case "empty":
				require.Empty(t, f.DefValue, "--%s", name)
			case "host-pid":
				require.Equal(t, fmt.Sprintf("%s-%d", host, os.Getpid()), f.DefValue, "--%s", name)
			default:
				want, got := def, f.DefValue
				if _, isDuration := f.Value.(flag.Getter).Get().(time.Duration); isDuration {
					if d, err := time.ParseDuration(def); err == nil {
						// "10m" in the docs, "10m0s" from the flag package.
						want = d.String()
					}
				}
				require.Equal(t, want, got, "--%s: docs/operations.md says the default is %s", name, def)
			}
		}
	}
	require.Greater(t, documented, 20, "the flag table of docs/operations.md was not found")
}

// TestParseDefaults: with no flags and no environment, zdm runs every
// service, embedded NATS with fsync on every write, loopback only, without
// authentication.
func TestParseDefaults(t *testing.T) {
	got, err := Parse(nil)
	require.NoError(t, err)
	require.Equal(t, []string{"snapshot-copier", "cdc-streamer", "lag-monitor", "coordinator"}, got.Targets)
	require.Equal(t, "127.0.0.1:7400", got.GRPCAddr)
	require.Equal(t, "127.0.0.1:7401", got.MetricsAddr)
	require.Empty(t, got.NATSURL, "embedded NATS by default")
	require.Zero(t, got.syncInterval, "fsync after every write by default")
	require.True(t, got.AuthOff())
	require.NoError(t, got.Coordinator.Validate())
	require.NotNil(t, got.Coordinator.Now)
	require.NoError(t, got.Copier.Validate())
}

// TestParseFlagsAndEnvironmentOverrideDefaults sets each flag, on the
// command line and through its ZDM_ variable, to a value other than its
// default, and finds that value in the parsed configuration.
func TestParseFlagsAndEnvironmentOverrideDefaults(t *testing.T) {
	for _, tc := range []struct {
		flag, value string
		needs       []string // other flags the value is valid only with
		got         func(Config) any
		want        any
	}{
		{"target", "coordinator,snapshot-copier", nil, func(c Config) any { return c.Targets }, []string{"snapshot-copier", "coordinator"}},
		{"grpc-addr", "127.0.0.1:9000", nil, func(c Config) any { return c.GRPCAddr }, "127.0.0.1:9000"},
		{"metrics-addr", ":9001", nil, func(c Config) any { return c.MetricsAddr }, ":9001"},
		{"nats-url", "nats://a:4222,nats://b:4222", nil, func(c Config) any { return c.NATSURL }, "nats://a:4222,nats://b:4222"},
		{"nats-listen", "127.0.0.1:9422", nil, func(c Config) any { return c.NATSListen }, "127.0.0.1:9422"},
		{"data-dir", "/var/lib/zdm", nil, func(c Config) any { return c.DataDir }, "/var/lib/zdm"},
		{"jetstream-sync", "250ms", nil, func(c Config) any { return c.syncInterval }, 250 * time.Millisecond},
		{"stream-replicas", "3", []string{"-nats-url", "nats://n:4222"}, func(c Config) any { return c.StreamReplicas }, 3},
		{"shutdown-timeout", "30s", nil, func(c Config) any { return c.ShutdownTimeout }, 30 * time.Second},
		{"log-format", "text", nil, func(c Config) any { return c.LogFormat }, "text"},
		{"log-level", "debug", nil, func(c Config) any { return c.LogLevel }, "debug"},
		{"api-keys-file", "/etc/zdm/keys", nil, func(c Config) any { return c.AuthOff() }, false},
		{"insecure-no-auth", "true", nil, func(c Config) any { return c.InsecureNoAuth }, true},
		{"tls-cert", "c.pem", []string{"-tls-key", "k.pem"}, func(c Config) any { return c.TLSCert }, "c.pem"},
		{"tls-key", "k.pem", []string{"-tls-cert", "c.pem"}, func(c Config) any { return c.TLSKey }, "k.pem"},
		{"coordinator-sweep-interval", "1m", nil, func(c Config) any { return c.Coordinator.SweepInterval }, time.Minute},
		{"cluster-probe-timeout", "3s", nil, func(c Config) any { return c.Coordinator.ProbeTimeout }, 3 * time.Second},
		{"coordinator-event-ack-wait", "2m", nil, func(c Config) any { return c.Coordinator.EventAckWait }, 2 * time.Minute},
		{"cluster-down-timeout", "1h", nil, func(c Config) any { return c.Coordinator.ClusterDownTimeout }, time.Hour},
		{"unit-max-attempts", "9", nil, func(c Config) any { return c.Coordinator.UnitMaxAttempts }, 9},
		{"copier-workers", "8", nil, func(c Config) any { return c.Copier.Workers }, 8},
		{"copier-id", "copier-a", nil, func(c Config) any { return c.Copier.ID }, "copier-a"},
		{"copier-batch-mib", "16", nil, func(c Config) any { return c.Copier.BatchMiB }, 16},
		{"copier-unit-ack-wait", "45s", nil, func(c Config) any { return c.Copier.UnitAckWait }, 45 * time.Second},
	} {
		t.Run(tc.flag, func(t *testing.T) {
			def, err := Parse(nil)
			require.NoError(t, err)
			require.NotEqual(t, tc.want, tc.got(def), "the test's value is the default: it proves nothing")

			byFlag, err := Parse(append([]string{"--" + tc.flag + "=" + tc.value}, tc.needs...))
			require.NoError(t, err)
			require.Equal(t, tc.want, tc.got(byFlag), "set by --%s", tc.flag)

			t.Setenv(envOf(tc.flag), tc.value)
			byEnv, err := Parse(tc.needs)
			require.NoError(t, err)
			require.Equal(t, tc.want, tc.got(byEnv), "set by %s", envOf(tc.flag))
		})
	}
}

// TestParseFlagsWinOverEnvironment: a flag given on the command line beats
// its ZDM_ variable, which beats the default.
func TestParseFlagsWinOverEnvironment(t *testing.T) {
	t.Setenv("ZDM_GRPC_ADDR", "127.0.0.1:9000")
	t.Setenv("ZDM_COPIER_WORKERS", "8")
	t.Setenv("ZDM_CLUSTER_PROBE_TIMEOUT", "3s")
	got, err := Parse([]string{"--grpc-addr", "127.0.0.1:9100", "-copier-workers=4"})
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:9100", got.GRPCAddr)
	require.Equal(t, 4, got.Copier.Workers)
	require.Equal(t, 3*time.Second, got.Coordinator.ProbeTimeout, "the variable still applies where no flag is given")
}

func TestParseAuthAndTLS(t *testing.T) {
	got, err := Parse(nil)
	require.NoError(t, err)
	require.True(t, got.AuthOff(), "loopback without keys runs open, and logs so")
	got, err = Parse([]string{"-grpc-addr", "[::1]:7400"})
	require.NoError(t, err)
	require.True(t, got.AuthOff())
	got, err = Parse([]string{"-grpc-addr", ":7400", "-api-keys-file", "/etc/zdm/keys"})
	require.NoError(t, err)
	require.False(t, got.AuthOff())
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-grpc-addr", ":7400"}, "--grpc-addr :7400 is reachable from other machines: set --api-keys-file, or --insecure-no-auth"},
		{[]string{"-grpc-addr", "10.1.2.3:7400"}, "reachable from other machines"},
		{[]string{"-api-keys-file", "k", "-insecure-no-auth"}, "contradict each other"},
		{[]string{"-tls-cert", "c.pem"}, "--tls-cert and --tls-key go together"},
	} {
		_, err := Parse(tc.args)
		require.ErrorContains(t, err, tc.want, "args %q", tc.args)
	}
}

// TestParseRejectsBadConfig: each bad value is refused with a message that
// names its flag and says what it wants.
func TestParseRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-target", "copier"}, `unknown service "copier"; want all or a comma-separated list of snapshot-copier, cdc-streamer, lag-monitor, coordinator`},
		{[]string{"-grpc-addr", "7400"}, `--grpc-addr "7400": want host:port, for example 127.0.0.1:7400`},
		{[]string{"-metrics-addr", "localhost:http"}, `port "http" is not a number from 0 to 65535`},
		{[]string{"-nats-listen", "nowhere"}, `--nats-listen "nowhere": want host:port, for example 127.0.0.1:7422`},
		{[]string{"-jetstream-sync", "sometimes"}, `--jetstream-sync "sometimes": want always or a positive interval such as 1s`},
		{[]string{"-stream-replicas", "3"}, `--stream-replicas 3 needs a NATS cluster`},
		{[]string{"-stream-replicas", "2", "-nats-url", "nats://n:4222"}, `--stream-replicas 2: want 1, 3 or 5`},
		{[]string{"-shutdown-timeout", "0s"}, `--shutdown-timeout 0s: want more than 0 and at most 5m`},
		{[]string{"-data-dir", ""}, `--data-dir is empty`},
		{[]string{"-coordinator-sweep-interval", "0s"}, `--coordinator-sweep-interval 0s: want 10ms to 1h`},
		{[]string{"-cluster-probe-timeout", "50ms"}, `--cluster-probe-timeout 50ms: want 100ms to 5m`},
		{[]string{"-coordinator-event-ack-wait", "500ms"}, `--coordinator-event-ack-wait 500ms: want 1s to 10m`},
		{[]string{"-cluster-down-timeout", "48h"}, `--cluster-down-timeout 48h0m0s: want 1s to 24h`},
		{[]string{"-unit-max-attempts", "0"}, `--unit-max-attempts 0: want 1 to 1000`},
		{[]string{"-copier-workers", "65"}, `--copier-workers 65: want 1 to 64`},
		{[]string{"-copier-batch-mib", "64"}, `--copier-batch-mib 64: want 1 to 32`},
		{[]string{"-copier-id", ""}, `--copier-id is empty`},
		{[]string{"-copier-unit-ack-wait", "11m"}, `--copier-unit-ack-wait 11m0s: want 1s to 10m`},
		{[]string{"extra"}, `unexpected arguments ["extra"]`},
	} {
		_, err := Parse(tc.args)
		require.ErrorContains(t, err, tc.want, "args %q", tc.args)
	}
	// Every bad value is reported at once, not only the first.
	_, err := Parse([]string{"-copier-workers", "0", "-unit-max-attempts", "0", "-grpc-addr", "7400"})
	for _, want := range []string{"--copier-workers 0", "--unit-max-attempts 0", `--grpc-addr "7400"`} {
		require.ErrorContains(t, err, want)
	}
}

// TestParseRejectsBadEnvironment: a bad value from a ZDM_ variable is
// refused like one from its flag, naming the flag (and the variable when
// the value does not even parse).
func TestParseRejectsBadEnvironment(t *testing.T) {
	t.Run("out of range", func(t *testing.T) {
		t.Setenv("ZDM_COPIER_WORKERS", "0")
		_, err := Parse(nil)
		require.ErrorContains(t, err, "--copier-workers 0: want 1 to 64")
	})
	t.Run("not a duration", func(t *testing.T) {
		t.Setenv("ZDM_SHUTDOWN_TIMEOUT", "forever")
		_, err := Parse(nil)
		require.ErrorContains(t, err, `"shutdown-timeout"`)
		require.ErrorContains(t, err, `"ZDM_SHUTDOWN_TIMEOUT"`)
	})
}

// TestParseValidatesOnlyTheServicesRun: the settings of a service that
// this process does not run are not checked.
func TestParseValidatesOnlyTheServicesRun(t *testing.T) {
	_, err := Parse([]string{"-target", "snapshot-copier", "-unit-max-attempts", "0"})
	require.NoError(t, err, "a copier-only process ignores coordinator settings")
	_, err = Parse([]string{"-target", "coordinator", "-copier-workers", "0"})
	require.NoError(t, err, "a coordinator-only process ignores copier settings")
	_, err = Parse([]string{"-target", "coordinator", "-unit-max-attempts", "0"})
	require.ErrorContains(t, err, "--unit-max-attempts 0")
}

func TestParseExternalNATSIgnoresEmbeddedSettings(t *testing.T) {
	got, err := Parse([]string{"-nats-url", "nats://a:4222,nats://b:4222", "-stream-replicas", "3", "-jetstream-sync", "bogus"})
	require.NoError(t, err)
	require.Equal(t, 3, got.StreamReplicas)
}

// TestRunRefusesBadLogSettings: the log format and level, which Parse does
// not check, stop Run before it starts anything.
func TestRunRefusesBadLogSettings(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-log-format", "xml"}, `log format "xml": want json or text`},
		{[]string{"-log-level", "loud"}, `log level "loud": want debug, info, warn or error`},
	} {
		dir := filepath.Join(t.TempDir(), "data")
		cfg, err := Parse(append([]string{"-data-dir", dir}, tc.args...))
		require.NoError(t, err)
		err = Run(context.Background(), cfg, io.Discard, nil)
		require.ErrorContains(t, err, tc.want)
		require.NoDirExists(t, dir, "nothing is written when the config is refused")
	}
}
