// Package grpcserver builds the gRPC server every zdm process serves: health
// (grpc.health.v1, one entry per service), server reflection for grpcurl,
// OpenTelemetry tracing and metrics, request logging, and a graceful stop
// bounded in time.
package grpcserver

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/zdm-io/zdm/pkg/apierr"
)

// Deps are what the server needs from the process. Options that the
// caller adds (TLS, authentication) go to New.
type Deps struct {
	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	Propagator     propagation.TextMapPropagator
}

// Server is a gRPC server with health and reflection registered.
type Server struct {
	grpc   *grpc.Server
	health *health.Server
	log    *slog.Logger
	// stopping is cancelled when Shutdown begins; it ends every open
	// stream (a watch can last for days) so a graceful stop does not wait
	// for them.
	stopping   context.Context
	endStreams context.CancelFunc
}

// errShuttingDown ends the streams open when the server shuts down.
var errShuttingDown = errors.New("zdm is shutting down")

// New returns a server that is not yet serving. Register services on
// Registrar before calling Serve. Extra options (TLS credentials, auth
// interceptors) are appended to zdm's own.
func New(deps Deps, opts ...grpc.ServerOption) *Server {
	s := &Server{health: health.NewServer(), log: deps.Logger}
	s.stopping, s.endStreams = context.WithCancel(context.Background())
	base := []grpc.ServerOption{
		grpc.StatsHandler(otelgrpc.NewServerHandler(
			otelgrpc.WithTracerProvider(deps.TracerProvider),
			otelgrpc.WithMeterProvider(deps.MeterProvider),
			otelgrpc.WithPropagators(deps.Propagator),
		)),
		// Errors are converted to gRPC status once, here, and logged after.
		grpc.ChainUnaryInterceptor(s.logUnary, apierr.UnaryServerInterceptor(deps.Logger)),
		grpc.ChainStreamInterceptor(s.logStream, s.endOnShutdown, apierr.StreamServerInterceptor(deps.Logger)),
	}
	s.grpc = grpc.NewServer(append(base, opts...)...)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	// Until every service has started, the server as a whole is not ready.
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	return s
}

// Registrar is where services register their gRPC implementations.
func (s *Server) Registrar() grpc.ServiceRegistrar { return s.grpc }

// SetServing marks the named services (and, with the empty name, the whole
// server) SERVING or NOT_SERVING in the health service.
func (s *Server) SetServing(serving bool, names ...string) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthpb.HealthCheckResponse_SERVING
	}
	for _, n := range names {
		s.health.SetServingStatus(n, st)
	}
}

// Serve accepts connections on lis until Shutdown. It returns nil after a
// Shutdown.
func (s *Server) Serve(lis net.Listener) error {
	if err := s.grpc.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

// Shutdown reports NOT_SERVING for every service, so load balancers stop
// sending work, ends open streams with UNAVAILABLE (clients reconnect
// elsewhere or later; a watch resumes from its last revision), then lets
// in-flight unary RPCs finish until ctx is done, after which they are
// cancelled. It blocks until the server has stopped.
func (s *Server) Shutdown(ctx context.Context) {
	s.health.Shutdown()
	s.endStreams()
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.log.Warn("gRPC graceful stop timed out; cancelling remaining RPCs")
		s.grpc.Stop()
		<-done
	}
}

// endOnShutdown gives each stream a context that Shutdown cancels, and
// tells the client why its stream ended.
func (s *Server) endOnShutdown(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx, cancel := context.WithCancelCause(ss.Context())
	defer cancel(nil)
	stop := context.AfterFunc(s.stopping, func() { cancel(errShuttingDown) })
	defer stop()
	err := h(srv, &stream{ServerStream: ss, ctx: ctx})
	if err != nil && errors.Is(context.Cause(ctx), errShuttingDown) {
		return status.Error(codes.Unavailable, "zdm is shutting down; reconnect (a watch resumes with from_revision)")
	}
	return err
}

// stream is a ServerStream with a context of its own.
type stream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *stream) Context() context.Context { return s.ctx }

func (s *Server) logUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := h(ctx, req)
	s.logCall(ctx, info.FullMethod, start, err)
	return resp, err
}

func (s *Server) logStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	start := time.Now()
	err := h(srv, ss)
	s.logCall(ss.Context(), info.FullMethod, start, err)
	return err
}

// logCall logs every RPC once, at debug level unless it failed on the
// server's side.
func (s *Server) logCall(ctx context.Context, method string, start time.Time, err error) {
	code := status.Code(err)
	level := slog.LevelDebug
	switch code {
	case codes.Internal, codes.Unknown, codes.DataLoss, codes.Unavailable:
		level = slog.LevelError
	}
	s.log.Log(ctx, level, "rpc", slog.String("method", method), slog.String("code", code.String()),
		slog.Duration("duration", time.Since(start)))
}
