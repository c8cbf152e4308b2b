package app

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/zdm-io/zdm/pkg/auth"
	"github.com/zdm-io/zdm/pkg/grpcserver"
	"github.com/zdm-io/zdm/pkg/natsbus"
	"github.com/zdm-io/zdm/pkg/registry"
	"github.com/zdm-io/zdm/pkg/service"
	"github.com/zdm-io/zdm/pkg/telemetry"
	streamer "github.com/zdm-io/zdm/services/cdc-streamer"
	"github.com/zdm-io/zdm/services/coordinator"
	lagmonitor "github.com/zdm-io/zdm/services/lag-monitor"
	copier "github.com/zdm-io/zdm/services/snapshot-copier"
)

// Version is the build's version, set by the Makefile through -ldflags.
var Version = "dev"

// Main parses args and runs until ctx is done. Logs go to logOut. It
// returns nil after a clean shutdown, including after -h.
func Main(ctx context.Context, args []string, logOut io.Writer) error {
	cfg, err := Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	return Run(ctx, cfg, logOut, nil)
}

// Ready reports the addresses a running process actually listens on (ports
// given as 0 resolved); Run calls it once every service is SERVING.
type Ready func(Addrs)

// Addrs are the listen addresses of a running process.
type Addrs struct {
	GRPC    string
	Metrics string
	// NATS is the embedded server's client URL; empty when external or
	// in-process only.
	NATS string
}

// Run starts the configured services and blocks until ctx is done, then
// shuts down within cfg.ShutdownTimeout. ready, if not nil, is called once
// everything serves.
func Run(ctx context.Context, cfg Config, logOut io.Writer, ready Ready) (err error) {
	logger, err := telemetry.NewLogger(logOut, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return err
	}
	defer func() {
		// Asked to stop while starting: a step that failed because of it
		// is not a failure of zdm, which stops as asked (exit status 0).
		if err != nil && ctx.Err() != nil {
			logger.Info("zdm stopped while starting", slog.Any("interrupted", err))
			err = nil
		}
	}()
	// Every step below registers how to undo it. On the way out the API
	// stops first, then the rest in reverse order of start, each within
	// its share of the shutdown timeout (see shutdown).
	var api, undo []step
	defer func() { shutdown(ctx, cfg.ShutdownTimeout, append(api, reversed(undo)...), logger) }()

	res, err := telemetry.NewResource(ctx, "", Version)
	if err != nil {
		return err
	}
	// A tracer provider per service, so each is a service of its own in
	// Jaeger; the API's spans belong to the coordinator when it runs here.
	tracers := map[string]trace.TracerProvider{}
	var exports []func(context.Context) error
	undo = append(undo, step{"trace export", 1, func(ctx context.Context) error {
		var errs []error
		for _, shutdown := range exports {
			errs = append(errs, shutdown(ctx))
		}
		return errors.Join(errs...)
	}})
	for _, t := range cfg.Targets {
		tres, err := telemetry.NewResource(ctx, t, Version)
		if err != nil {
			return err
		}
		tp, err := telemetry.NewTracerProvider(ctx, tres)
		if err != nil {
			return err
		}
		exports, tracers[t] = append(exports, tp.Shutdown), tp
	}
	apiTracer := cmp.Or(tracers[coordinator.Name], tracers[cfg.Targets[0]])
	metricsReg := telemetry.NewRegistry()
	mp, err := telemetry.NewMeterProvider(metricsReg, res)
	if err != nil {
		return err
	}
	undo = append(undo, step{"metrics provider", 1, mp.Shutdown})
	prop := telemetry.Propagator()

	var addrs Addrs
	bus, embedded, err := connectBus(cfg, logger)
	if err != nil {
		return err
	}
	if embedded != nil {
		addrs.NATS = embedded.ClientURL()
		undo = append(undo, step{"embedded NATS", 1, func(context.Context) error { embedded.Shutdown(); return nil }})
	}
	undo = append(undo, step{"NATS connection drain", 2, bus.Close})
	bus.Replicas = cfg.StreamReplicas
	if err := natsbus.EnsureStreams(ctx, bus.JS, bus.Replicas, natsbus.ChangeLimits{MaxAge: cfg.ChangeMaxAge, MaxBytes: cfg.ChangeMaxBytes}); err != nil {
		return err
	}
	reg, err := registry.Open(ctx, bus.JS, bus.Replicas, cfg.box)
	if err != nil {
		return err
	}
	if !cfg.box.Enabled() {
		logger.Warn("cluster credentials are stored in plain form in the zdm_clusters bucket",
			slog.String("fix", "set ZDM_CREDENTIALS_KEY (or --credentials-key) to 32 random bytes in base64, the same in every zdm process"))
	}
	if slices.Contains(cfg.Targets, copier.Name) {
		limitMemory(cfg.Copier, logger)
	}

	grpcLis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("gRPC API on --grpc-addr %s: %w (another zdm running? choose another address)", cfg.GRPCAddr, err)
	}
	metricsLis, err := net.Listen("tcp", cfg.MetricsAddr)
	if err != nil {
		return errors.Join(fmt.Errorf("metrics on --metrics-addr %s: %w (choose another address)", cfg.MetricsAddr, err), grpcLis.Close())
	}
	addrs.GRPC, addrs.Metrics = grpcLis.Addr().String(), metricsLis.Addr().String()

	opts, err := apiSecurity(cfg, logger)
	if err != nil {
		return errors.Join(err, grpcLis.Close(), metricsLis.Close())
	}
	srv := grpcserver.New(grpcserver.Deps{Logger: logger, TracerProvider: apiTracer, MeterProvider: mp, Propagator: prop}, opts...)
	metrics := &http.Server{Handler: metricsHandler(metricsReg), ReadHeaderTimeout: 10 * time.Second}

	services, err := newServices(cfg, service.Deps{Bus: bus, Propagator: prop, Metrics: metricsReg, Registry: reg}, tracers, logger)
	if err != nil {
		return errors.Join(err, grpcLis.Close(), metricsLis.Close())
	}
	for _, s := range services {
		s.Register(srv.Registrar())
	}
	serveErr := make(chan error, 2)
	go func() { serveErr <- srv.Serve(grpcLis) }()
	api = append(api, step{"gRPC API", 3, func(ctx context.Context) error { srv.Shutdown(ctx); return nil }})
	go func() {
		if err := metrics.Serve(metricsLis); !errors.Is(err, http.ErrServerClosed) {
			serveErr <- fmt.Errorf("metrics server: %w", err)
		}
	}()
	api = append(api, step{"metrics endpoint", 1, metrics.Shutdown})

	for _, s := range services {
		if err := s.Start(ctx); err != nil {
			return fmt.Errorf("start %s: %w", s.Name(), err)
		}
		undo = append(undo, step{s.Name(), 2, func(ctx context.Context) error {
			srv.SetServing(false, s.HealthNames()...)
			return s.Stop(ctx)
		}})
		idle, ok := s.(service.Idle)
		srv.SetServing(!ok || !idle.Idle(), s.HealthNames()...)
	}
	// Stages are announced once their services run, and withdrawn first
	// on the way out.
	stages, err := natsbus.StagesBucket.Open(ctx, bus.JS, bus.Replicas)
	if err != nil {
		return err
	}
	announce, stopAnnouncing := context.WithCancel(context.WithoutCancel(ctx))
	var announcing sync.WaitGroup
	for _, s := range services {
		if st, ok := s.(service.Staged); ok {
			announcing.Go(func() { service.Announce(announce, stages, st.Stages(), logger) })
		}
	}
	undo = append(undo, step{"stage announcements", 1, func(ctx context.Context) error {
		stopAnnouncing()
		return service.Wait(ctx, &announcing)
	}})
	srv.SetServing(true, "")
	logger.Info("zdm serving", slog.String("version", Version), slog.Any("targets", cfg.Targets),
		slog.String("grpc_addr", addrs.GRPC), slog.String("metrics_addr", addrs.Metrics),
		slog.String("nats", natsDescription(cfg, addrs)), slog.Bool("otlp_traces", telemetry.OTLPEnabled()))
	if ready != nil {
		ready(addrs)
	}

	select {
	case <-ctx.Done():
		logger.Info("zdm shutting down", slog.String("timeout", cfg.ShutdownTimeout.String()))
		return nil
	case err := <-serveErr:
		return err
	}
}

// limitMemory sets a soft memory limit for the process when it runs
// copiers, unless GOMEMLIMIT set one: each worker holds about four batches
// (the page being written and its request, the page being read and its
// reply), and the garbage collector would otherwise let the heap grow to
// twice that. Near the limit the collector works harder; it never fails
// an allocation. It is process-wide, so it belongs to the binary.
func limitMemory(cfg copier.Config, logger *slog.Logger) {
	if debug.SetMemoryLimit(-1) != math.MaxInt64 {
		return // GOMEMLIMIT is set
	}
	limit := int64(cfg.Workers)*6*int64(cfg.BatchMiB<<20) + 96<<20
	debug.SetMemoryLimit(limit)
	logger.Info("memory limit set for the copier", slog.Int64("limit_mib", limit>>20), slog.String("override", "GOMEMLIMIT"))
}

// step is one part of the shutdown: what it stops and its weight, its
// share of the shutdown time relative to the steps after it.
type step struct {
	name   string
	weight int
	stop   func(context.Context) error
}

func reversed(s []step) []step {
	out := make([]step, len(s))
	for i, st := range s {
		out[len(s)-1-i] = st
	}
	return out
}

// leaveBehindAfter is how long shutdown waits, after a step's share has
// run out, for the step to end before it leaves it behind: a step that
// heeds its context still needs a moment to return.
const leaveBehindAfter = 100 * time.Millisecond

// shutdown runs steps in order, all within timeout. Each step gets its
// weighted share of the time that is left, so one that hangs (a drain that
// never ends) cannot use up the time of the steps after it, and time a
// step leaves unused goes to the rest. A step that fails or runs out of
// time is logged and the next one runs: once asked to stop, zdm stops. A
// step that does not heed its context (one that cannot be cut short) is
// left behind at the end of its share, to end with the process.
func shutdown(ctx context.Context, timeout time.Duration, steps []step, logger *slog.Logger) {
	base := context.WithoutCancel(ctx)
	deadline := time.Now().Add(timeout)
	weights := 0
	for _, st := range steps {
		weights += st.weight
	}
	for _, st := range steps {
		share := time.Until(deadline) * time.Duration(st.weight) / time.Duration(weights)
		weights -= st.weight
		sctx, cancel := context.WithTimeout(base, share)
		start := time.Now()
		done := make(chan error, 1)
		go func() { done <- st.stop(sctx) }()
		var err error
		select {
		case err = <-done:
		case <-sctx.Done():
			select {
			case err = <-done: // it heeds its context: it ends just after it
			case <-time.After(leaveBehindAfter):
				err = fmt.Errorf("still running at the end of its share: %w", sctx.Err())
			}
		}
		cancel()
		if err != nil {
			logger.Warn("shutdown step did not finish cleanly", slog.String("step", st.name),
				slog.String("share", share.Round(time.Millisecond).String()), slog.Any("error", err))
			continue
		}
		logger.Info("stopped", slog.String("step", st.name), slog.String("took", time.Since(start).Round(time.Millisecond).String()))
	}
	logger.Info("zdm stopped")
}

// apiSecurity returns the server options for TLS and API keys.
func apiSecurity(cfg Config, logger *slog.Logger) ([]grpc.ServerOption, error) {
	var opts []grpc.ServerOption
	if cfg.TLSCert != "" {
		creds, err := credentials.NewServerTLSFromFile(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		opts = append(opts, grpc.Creds(creds))
	}
	if cfg.AuthOff() {
		logger.Warn("API authentication is off: every caller that reaches the API is admin",
			slog.String("grpc_addr", cfg.GRPCAddr), slog.Bool("insecure_no_auth", cfg.InsecureNoAuth),
			slog.String("fix", "set --api-keys-file"))
		return opts, nil
	}
	keys, err := auth.LoadKeys(cfg.APIKeysFile)
	if err != nil {
		return nil, err
	}
	return append(opts, keys.ServerOptions()...), nil
}

func connectBus(cfg Config, logger *slog.Logger) (*natsbus.Conn, *natsbus.Embedded, error) {
	if cfg.NATSURL != "" {
		bus, err := natsbus.Connect(cfg.NATSURL, nil, "zdm", logger)
		return bus, nil, err
	}
	dir := filepath.Join(cfg.DataDir, "jetstream")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, nil, fmt.Errorf("--data-dir: %w", err)
	}
	embedded, err := natsbus.StartEmbedded(natsbus.EmbeddedConfig{
		StoreDir: dir, Listen: cfg.NATSListen, SyncInterval: cfg.syncInterval,
	}, logger)
	if err != nil {
		return nil, nil, err
	}
	bus, err := natsbus.Connect("", embedded.InProcess(), "zdm", logger)
	if err != nil {
		embedded.Shutdown()
		return nil, nil, err
	}
	return bus, embedded, nil
}

func newServices(cfg Config, deps service.Deps, tracers map[string]trace.TracerProvider, logger *slog.Logger) ([]service.Service, error) {
	var out []service.Service
	for _, t := range cfg.Targets {
		d := deps
		d.Logger, d.TracerProvider = logger.With(slog.String("service", t)), tracers[t]
		switch t {
		case copier.Name:
			c, err := copier.New(cfg.Copier, d)
			if err != nil {
				return nil, err
			}
			out = append(out, c)
		case streamer.Name:
			s, err := streamer.New(cfg.Streamer, d)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		case lagmonitor.Name:
			m, err := lagmonitor.New(cfg.LagMonitor, d)
			if err != nil {
				return nil, err
			}
			out = append(out, m)
		case coordinator.Name:
			c, err := coordinator.New(cfg.Coordinator, d)
			if err != nil {
				return nil, err
			}
			out = append(out, c)
		}
	}
	return out, nil
}

// metricsHandler serves /metrics, and Go's profiles under /debug/pprof/
// for finding what a busy process spends its CPU and memory on (the
// endpoint listens on loopback unless --metrics-addr says otherwise).
func metricsHandler(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

func natsDescription(cfg Config, a Addrs) string {
	switch {
	case cfg.NATSURL != "":
		return "external"
	case a.NATS != "":
		return "embedded, clients at " + a.NATS
	default:
		return "embedded, in-process only"
	}
}
