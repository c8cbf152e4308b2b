package grpcserver

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	noopmetric "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	nooptrace "go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// TestShutdownEndsStreams: an open stream (a health watch here, a
// WatchMigration in zdm) does not hold up the graceful stop: Shutdown
// ends it with UNAVAILABLE saying why, and returns without waiting out its
// context.
func TestShutdownEndsStreams(t *testing.T) {
	var log bytes.Buffer
	srv := New(Deps{Logger: slog.New(slog.NewTextHandler(&log, nil)), TracerProvider: nooptrace.NewTracerProvider(),
		MeterProvider: noopmetric.NewMeterProvider(), Propagator: propagation.TraceContext{}})
	srv.SetServing(true, "")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer func() { require.NoError(t, conn.Close()) }()

	watch, err := healthpb.NewHealthClient(conn).Watch(t.Context(), &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	first, err := watch.Recv()
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, first.GetStatus())

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv.Shutdown(ctx)
	require.NoError(t, ctx.Err(), "Shutdown returned before its context ended: the stream did not hold it up")
	require.NotContains(t, log.String(), "graceful stop timed out")
	require.NoError(t, <-served)
	for {
		resp, err := watch.Recv()
		if err != nil {
			require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
			require.Contains(t, status.Convert(err).Message(), "zdm is shutting down; reconnect")
			break
		}
		require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, resp.GetStatus(), "the health says so first")
	}
}
