// Package app composes zdm's services into the zdm binary: configuration,
// the embedded NATS server, the gRPC and metrics servers, start-up in
// dependency order and shutdown in reverse.
package app

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3"

	"github.com/zdm-io/zdm/pkg/natsbus"
	"github.com/zdm-io/zdm/pkg/secret"
	streamer "github.com/zdm-io/zdm/services/cdc-streamer"
	"github.com/zdm-io/zdm/services/coordinator"
	lagmonitor "github.com/zdm-io/zdm/services/lag-monitor"
	copier "github.com/zdm-io/zdm/services/snapshot-copier"
)

// Targets that -target accepts, in start-up order: the coordinator starts
// last so the services it commands are up before it sends work.
var allTargets = []string{"snapshot-copier", "cdc-streamer", "lag-monitor", "coordinator"}

// Config is the binary's configuration. Every flag can also be set by an
// environment variable: ZDM_ and the flag name in upper case with '-' as
// '_' (for example ZDM_GRPC_ADDR).
type Config struct {
	Targets          []string
	GRPCAddr         string
	MetricsAddr      string
	NATSURL          string
	NATSListen       string
	DataDir          string
	JetStreamSync    string
	StreamReplicas   int
	ChangeMaxAge     time.Duration
	ChangeMaxBytes   int64
	ShutdownTimeout  time.Duration
	LogFormat        string
	LogLevel         string
	APIKeysFile      string
	InsecureNoAuth   bool
	TLSCert          string
	TLSKey           string
	CredentialsKey   string
	Coordinator      coordinator.Config
	Copier           copier.Config
	Streamer         streamer.Config
	LagMonitor       lagmonitor.Config
	syncInterval     time.Duration
	targetFlagString string
	box              *secret.Box
}

// DefaultConfig is the configuration with every flag at its default.
func DefaultConfig() Config {
	var c Config
	fs := flag.NewFlagSet("zdm", flag.ContinueOnError)
	c.RegisterFlags(fs)
	return c
}

// RegisterFlags defines the binary's flags on fs, with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.targetFlagString, "target", "all",
		"services to run: all, or a comma-separated list of "+strings.Join(allTargets, ", "))
	fs.StringVar(&c.GRPCAddr, "grpc-addr", "127.0.0.1:7400", "host:port of the gRPC API (all services in this process)")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", "127.0.0.1:7401", "host:port of the Prometheus /metrics endpoint")
	fs.StringVar(&c.NATSURL, "nats-url", "", "NATS server URL(s), comma-separated; empty runs an embedded NATS server with JetStream")
	fs.StringVar(&c.NATSListen, "nats-listen", "127.0.0.1:7422", "client address of the embedded NATS server, so other zdm processes can join; empty for in-process only")
	fs.StringVar(&c.DataDir, "data-dir", "zdm-data", "directory for the embedded NATS server's JetStream files")
	fs.StringVar(&c.JetStreamSync, "jetstream-sync", "always", "embedded JetStream fsync policy: always (after every write) or an interval such as 1s")
	fs.IntVar(&c.StreamReplicas, "stream-replicas", 1, "replicas of each JetStream stream; 3 on a production NATS cluster")
	fs.DurationVar(&c.ChangeMaxAge, "change-max-age", natsbus.DefaultChangeMaxAge, "how long the change stream keeps captured changes; at least the longest max_sync_duration plus a day")
	fs.Int64Var(&c.ChangeMaxBytes, "change-max-bytes", 0, "byte limit of the change stream (0: the JetStream server's storage); when reached, capture fails the migration instead of discarding changes")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 8*time.Second, "longest time in-flight work may take to finish on shutdown")
	fs.StringVar(&c.LogFormat, "log-format", "json", "log format: json or text")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.APIKeysFile, "api-keys-file", "", "file of API keys ('<name> <admin|viewer> sha256:<hex>' per line); required unless --insecure-no-auth or the API listens on loopback only")
	fs.BoolVar(&c.InsecureNoAuth, "insecure-no-auth", false, "serve the API without authentication: every caller is admin")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "PEM certificate for TLS on the gRPC API (with --tls-key)")
	fs.StringVar(&c.TLSKey, "tls-key", "", "PEM private key for TLS on the gRPC API (with --tls-cert)")
	fs.StringVar(&c.CredentialsKey, "credentials-key", "", "32 random bytes in base64 (openssl rand -base64 32) that seal cluster credentials stored on the bus; every zdm process of a deployment needs the same one. Prefer ZDM_CREDENTIALS_KEY to the flag")
	c.Coordinator.RegisterFlags(fs)
	c.Copier.RegisterFlags(fs)
	c.Streamer.RegisterFlags(fs)
	c.LagMonitor.RegisterFlags(fs)
}

// AuthOff reports whether the API runs without authentication: asked for
// with --insecure-no-auth, or by default when it listens on loopback only
// and no keys file is given.
func (c Config) AuthOff() bool { return c.APIKeysFile == "" }

// Parse parses args and the ZDM_* environment into a validated Config.
func Parse(args []string) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("zdm", flag.ContinueOnError)
	c.RegisterFlags(fs)
	if err := ff.Parse(fs, args, ff.WithEnvVarPrefix("ZDM")); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments %q: zdm takes only flags (see zdm -h)", fs.Args())
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Validate checks the configuration and fills in derived fields. Its
// errors say what is wrong and how to fix it.
func (c *Config) Validate() error {
	var errs []error
	targets, err := parseTargets(c.targetFlagString)
	if err != nil {
		errs = append(errs, err)
	}
	c.Targets = targets
	errs = append(errs, checkAddr("grpc-addr", c.GRPCAddr, "127.0.0.1:7400"), checkAddr("metrics-addr", c.MetricsAddr, "127.0.0.1:7401"))
	if c.NATSURL == "" {
		if c.NATSListen != "" {
			errs = append(errs, checkAddr("nats-listen", c.NATSListen, "127.0.0.1:7422"))
		}
		if c.DataDir == "" {
			errs = append(errs, errors.New("--data-dir is empty: the embedded NATS server needs a directory for its files"))
		}
		switch c.JetStreamSync {
		case "always":
			c.syncInterval = 0
		default:
			d, err := time.ParseDuration(c.JetStreamSync)
			if err != nil || d <= 0 {
				errs = append(errs, fmt.Errorf("--jetstream-sync %q: want always or a positive interval such as 1s", c.JetStreamSync))
			}
			c.syncInterval = d
		}
	}
	if c.StreamReplicas != 1 && c.StreamReplicas != 3 && c.StreamReplicas != 5 {
		errs = append(errs, fmt.Errorf("--stream-replicas %d: want 1, 3 or 5", c.StreamReplicas))
	}
	if c.ChangeMaxAge < 25*time.Hour {
		errs = append(errs, fmt.Errorf("--change-max-age %s: want at least 25h (the shortest max_sync_duration plus a day)", c.ChangeMaxAge))
	}
	if c.ChangeMaxBytes != 0 && c.ChangeMaxBytes < 1<<20 {
		errs = append(errs, fmt.Errorf("--change-max-bytes %d: want 0 (no limit of its own) or at least 1048576", c.ChangeMaxBytes))
	}
	if c.NATSURL == "" && c.StreamReplicas != 1 {
		errs = append(errs, fmt.Errorf("--stream-replicas %d needs a NATS cluster: set --nats-url, or use 1 with the embedded server", c.StreamReplicas))
	}
	if c.ShutdownTimeout <= 0 || c.ShutdownTimeout > 5*time.Minute {
		errs = append(errs, fmt.Errorf("--shutdown-timeout %s: want more than 0 and at most 5m", c.ShutdownTimeout))
	}
	if c.APIKeysFile != "" && c.InsecureNoAuth {
		errs = append(errs, errors.New("--api-keys-file and --insecure-no-auth contradict each other: choose one"))
	}
	if c.APIKeysFile == "" && !c.InsecureNoAuth && !loopback(c.GRPCAddr) {
		errs = append(errs, fmt.Errorf("--grpc-addr %s is reachable from other machines: set --api-keys-file, or --insecure-no-auth to serve without authentication", c.GRPCAddr))
	}
	if c.box, err = secret.ParseKey(c.CredentialsKey); err != nil {
		errs = append(errs, err)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("--tls-cert and --tls-key go together: set both or neither"))
	}
	if slices.Contains(c.Targets, coordinator.Name) {
		errs = append(errs, c.Coordinator.Validate())
	}
	if slices.Contains(c.Targets, copier.Name) {
		errs = append(errs, c.Copier.Validate())
	}
	if slices.Contains(c.Targets, streamer.Name) {
		errs = append(errs, c.Streamer.Validate())
	}
	if slices.Contains(c.Targets, lagmonitor.Name) {
		errs = append(errs, c.LagMonitor.Validate())
	}
	return errors.Join(errs...)
}

func parseTargets(s string) ([]string, error) {
	var out []string
	for t := range strings.SplitSeq(s, ",") {
		t = strings.TrimSpace(t)
		switch {
		case t == "all":
			out = append(out, allTargets...)
		case slices.Contains(allTargets, t):
			out = append(out, t)
		default:
			return nil, fmt.Errorf("--target %q: unknown service %q; want all or a comma-separated list of %s", s, t, strings.Join(allTargets, ", "))
		}
	}
	// Start-up order is fixed whatever the order given.
	var ordered []string
	for _, t := range allTargets {
		if slices.Contains(out, t) {
			ordered = append(ordered, t)
		}
	}
	return ordered, nil
}

// loopback reports whether addr listens on this machine only.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func checkAddr(flagName, addr, example string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return fmt.Errorf("--%s %q: want host:port, for example %s", flagName, addr, example)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("--%s %q: port %q is not a number from 0 to 65535", flagName, addr, port)
	}
	if strings.ContainsAny(host, " /") {
		return fmt.Errorf("--%s %q: %q is not a host name or IP address", flagName, addr, host)
	}
	return nil
}
