// Package service defines what the zdm binary needs from each of the four
// services so it can run any set of them in one process: the dependencies it
// hands them and the lifecycle it drives.
package service

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/zdm-io/zdm/pkg/natsbus"
	"github.com/zdm-io/zdm/pkg/registry"
)

// Deps are the process-wide things a service uses. None of them is a global:
// the binary builds them once and passes them to every service it runs.
type Deps struct {
	// Logger, already tagged with the service's name by the binary.
	Logger *slog.Logger
	// Bus is the NATS connection with JetStream, streams already created.
	Bus *natsbus.Conn
	// TracerProvider for spans the service starts itself (gRPC spans are
	// made by the server).
	TracerProvider trace.TracerProvider
	// Propagator injects and extracts trace context in bus message headers.
	Propagator propagation.TextMapPropagator
	// Metrics is where the service registers its Prometheus collectors.
	Metrics prometheus.Registerer
	// Registry resolves the cluster IDs that bus messages carry into
	// connections.
	Registry *registry.Registry
}

// Service is one zdm service's lifecycle as the binary drives it: Register
// its gRPC APIs, Start it, report its health entries SERVING, and on
// shutdown report them NOT_SERVING and Stop it, in reverse order of start.
type Service interface {
	// Name is the -target name, for example "coordinator".
	Name() string
	// Register adds the service's gRPC implementations. Called before Start.
	Register(grpc.ServiceRegistrar)
	// HealthNames are the grpc.health.v1 entries the service answers for,
	// normally its fully qualified gRPC service names.
	HealthNames() []string
	// Start begins background work and returns once the service can serve.
	// ctx bounds start-up only.
	Start(ctx context.Context) error
	// Stop ends background work, letting work in hand finish until ctx is
	// done. It blocks until the service has stopped.
	Stop(ctx context.Context) error
}

// Wait waits for wg until ctx is done; it returns ctx's error when the
// wait was cut short, so Stop can say what did not finish in time.
func Wait(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("background work still running: %w", ctx.Err())
	}
}
