package main_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/zdm-io/zdm/cmd/zdm/internal/app"
	"github.com/zdm-io/zdm/pkg/ztest"
	copierpb "github.com/zdm-io/zdm/proto/zdm/copier/v1"
	lagpb "github.com/zdm-io/zdm/proto/zdm/lag/v1"
	streamerpb "github.com/zdm-io/zdm/proto/zdm/streamer/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// process is one zdm running in this test process.
type process struct {
	addrs app.Addrs
	stop  func() error
}

// start runs app.Run with args on free ports and waits until it serves.
func start(t *testing.T, args ...string) process {
	t.Helper()
	args = append([]string{"-grpc-addr", "127.0.0.1:0", "-metrics-addr", "127.0.0.1:0",
		"-data-dir", t.TempDir(), "-log-format", "text"}, args...)
	cfg, err := app.Parse(args)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan app.Addrs, 1)
	done := make(chan error, 1)
	logs := &syncBuffer{}
	go func() { done <- app.Run(ctx, cfg, logs, func(a app.Addrs) { ready <- a }) }()
	select {
	case a := <-ready:
		var once sync.Once
		var stopErr error
		stop := func() error {
			once.Do(func() {
				cancel()
				select {
				case stopErr = <-done:
				case <-time.After(15 * time.Second):
					stopErr = fmt.Errorf("zdm did not stop within 15s; logs:\n%s", logs)
				}
			})
			return stopErr
		}
		t.Cleanup(func() { require.NoError(t, stop()) })
		return process{addrs: a, stop: stop}
	case err := <-done:
		cancel()
		t.Fatalf("zdm exited before serving: %v\n%s", err, logs)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatalf("zdm not serving within 30s; logs:\n%s", logs)
	}
	return process{}
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn
}

func listServices(t *testing.T, conn *grpc.ClientConn) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	require.NoError(t, err)
	require.NoError(t, stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}))
	resp, err := stream.Recv()
	require.NoError(t, err)
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	return names
}

func healthOf(t *testing.T, conn *grpc.ClientConn, service string) (healthpb.HealthCheckResponse_ServingStatus, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	return resp.GetStatus(), err
}

var (
	coordinatorServices = []string{zdmpb.MigrationService_ServiceDesc.ServiceName, zdmpb.ClusterService_ServiceDesc.ServiceName}
	workerServices      = []string{
		copierpb.SnapshotCopierService_ServiceDesc.ServiceName,
		streamerpb.GatewayControlService_ServiceDesc.ServiceName,
		lagpb.LagMonitorService_ServiceDesc.ServiceName,
	}
)

// TestE2EAllInOne runs every service in one process with the embedded
// JetStream and checks what an operator sees through grpcurl and
// Prometheus.
func TestE2EAllInOne(t *testing.T) {
	ztest.Integration(t)
	p := start(t)
	conn := dial(t, p.addrs.GRPC)

	services := listServices(t, conn)
	for _, want := range append(append([]string{"grpc.health.v1.Health"}, coordinatorServices...), workerServices...) {
		require.Contains(t, services, want)
	}
	for _, name := range append(append([]string{""}, coordinatorServices...), workerServices...) {
		st, err := healthOf(t, conn, name)
		require.NoError(t, err, "health of %q", name)
		require.Equal(t, healthpb.HealthCheckResponse_SERVING, st, "health of %q", name)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	clusters, err := zdmpb.NewClusterServiceClient(conn).ListClusters(ctx, &zdmpb.ListClustersRequest{})
	require.NoError(t, err)
	require.Empty(t, clusters.GetClusters())
	_, err = zdmpb.NewClusterServiceClient(conn).RegisterCluster(ctx, &zdmpb.RegisterClusterRequest{
		ClusterId: "src", Connection: &zdmpb.ClusterConnection{Endpoint: "no-port"},
	})
	require.Equal(t, codes.InvalidArgument, status.Code(err), "errors reach callers with their code: %v", err)
	// zdm's own API answers gRPC but is no Milvus: it is refused, and not
	// registered.
	_, err = zdmpb.NewClusterServiceClient(conn).RegisterCluster(ctx, &zdmpb.RegisterClusterRequest{
		ClusterId: "itself", Connection: &zdmpb.ClusterConnection{Endpoint: p.addrs.GRPC},
	})
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	require.Contains(t, status.Convert(err).Message(), "answers gRPC but is not a Milvus server")
	_, err = zdmpb.NewClusterServiceClient(conn).GetCluster(ctx, &zdmpb.GetClusterRequest{ClusterId: "itself"})
	require.Equal(t, codes.NotFound, status.Code(err), "%v", err)
	// No gateway stands in front of the source: a ZERO_DOWNTIME migration
	// is refused at once, saying what is missing, instead of capturing
	// nothing.
	registerPair(t, ctx, zdmpb.NewClusterServiceClient(conn), ztest.NewServer(t, "lite2"), ztest.NewServer(t, "lite2"))
	_, err = zdmpb.NewMigrationServiceClient(conn).CreateMigration(ctx, &zdmpb.CreateMigrationRequest{
		Type: zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME, SourceClusterId: "src", TargetClusterId: "tgt"})
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	require.Contains(t, status.Convert(err).Message(), "--gateway-cluster src")
	_, err = lagpb.NewLagMonitorServiceClient(conn).GetLag(ctx, &lagpb.GetLagRequest{MigrationId: "m"})
	require.Equal(t, codes.NotFound, status.Code(err))
	gw, err := streamerpb.NewGatewayControlServiceClient(conn).GetGatewayStatus(ctx, &streamerpb.GetGatewayStatusRequest{})
	require.NoError(t, err)
	require.NotEmpty(t, gw.GetGatewayId())
	require.Zero(t, gw.GetHoldingAttempt())
	// The copier answers for itself.
	st, err := copierpb.NewSnapshotCopierServiceClient(conn).GetCopierStatus(ctx, &copierpb.GetCopierStatusRequest{})
	require.NoError(t, err)
	require.NotEmpty(t, st.GetCopierId())
	require.Empty(t, st.GetActiveUnits())

	resp, err := http.Get("http://" + p.addrs.Metrics + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	for _, want := range []string{"go_goroutines", `rpc_method="zdm.v1.ClusterService/ListClusters"`, `service_name="zdm"`} {
		require.True(t, strings.Contains(string(body), want), "/metrics lacks %s", want)
	}

	require.NoError(t, p.stop())
	_, err = healthOf(t, conn, "")
	require.Error(t, err, "server must be gone after shutdown")
}

// TestE2ESplitRoles runs the coordinator with the embedded NATS server and
// a copier in another process that joins it through --nats-url, the way
// copiers scale out.
func TestE2ESplitRoles(t *testing.T) {
	ztest.Integration(t)
	coord := start(t, "-target", "coordinator", "-nats-listen", "127.0.0.1:0")
	require.NotEmpty(t, coord.addrs.NATS)
	worker := start(t, "-target", "snapshot-copier", "-nats-url", coord.addrs.NATS)

	coordConn, workerConn := dial(t, coord.addrs.GRPC), dial(t, worker.addrs.GRPC)
	for _, name := range coordinatorServices {
		require.Contains(t, listServices(t, coordConn), name)
		require.NotContains(t, listServices(t, workerConn), name)
	}
	st, err := healthOf(t, workerConn, copierpb.SnapshotCopierService_ServiceDesc.ServiceName)
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, st)
	_, err = healthOf(t, workerConn, zdmpb.MigrationService_ServiceDesc.ServiceName)
	require.Equal(t, codes.NotFound, status.Code(err), "a copier-only process has no coordinator health entry")

	// The worker must stop while its NATS server is still up, then the
	// coordinator.
	require.NoError(t, worker.stop())
	require.NoError(t, coord.stop())
}

// zdmBinary builds bin/zdm once for the tests that run it as a process.
var zdmBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "zdm-e2e")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "zdm")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// TestE2EBinaryDefaults runs bin/zdm with no flags, as the README does: it
// serves on 127.0.0.1:7400 and :7401 and exits 0 within 10s of SIGTERM.
func TestE2EBinaryDefaults(t *testing.T) {
	ztest.Integration(t)
	for _, addr := range []string{"127.0.0.1:7400", "127.0.0.1:7401", "127.0.0.1:7422"} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Fatalf("%s is in use: stop the zdm (or other program) listening there, the test needs zdm's default ports", addr)
		}
	}
	bin, err := zdmBinary()
	require.NoError(t, err)
	cmd := exec.Command(bin)
	cmd.Dir = t.TempDir()
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	conn := dial(t, "127.0.0.1:7400")
	var st healthpb.HealthCheckResponse_ServingStatus
	ztest.Eventually(t, 30*time.Second, func() bool {
		st, err = healthOf(t, conn, "")
		return err == nil && st == healthpb.HealthCheckResponse_SERVING
	}, "not SERVING (last: %s); logs:\n%s", lazy(func() string { return fmt.Sprintf("%v %v", st, err) }), &logs)
	services := listServices(t, conn)
	for _, want := range []string{"zdm.v1.MigrationService", "zdm.v1.ClusterService", "grpc.health.v1.Health"} {
		require.Contains(t, services, want)
	}
	resp, err := http.Get("http://127.0.0.1:7401/metrics")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.DirExists(t, filepath.Join(cmd.Dir, "zdm-data", "jetstream"), "embedded JetStream stores under --data-dir")

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-exited:
		require.NoError(t, err, "exit status after SIGTERM; logs:\n%s", &logs)
	case <-time.After(10 * time.Second):
		t.Fatalf("zdm still running 10s after SIGTERM; logs:\n%s", &logs)
	}
	require.Contains(t, logs.String(), `"msg":"zdm stopped"`)
}

// TestE2EBinaryRejectsBadConfig: a bad flag stops the binary at start with
// exit status 1 and a message that says how to fix it.
func TestE2EBinaryRejectsBadConfig(t *testing.T) {
	ztest.Integration(t)
	bin, err := zdmBinary()
	require.NoError(t, err)
	cmd := exec.Command(bin, "-target", "everything", "-grpc-addr", "nowhere")
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	var exitErr *exec.ExitError
	require.ErrorAs(t, err, &exitErr)
	require.Equal(t, 1, exitErr.ExitCode())
	require.Contains(t, string(out), `unknown service "everything"`)
	require.Contains(t, string(out), `--grpc-addr "nowhere": want host:port`)
	require.NoDirExists(t, filepath.Join(cmd.Dir, "zdm-data"), "nothing is written when the config is refused")
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.TrimSpace(s.b.String())
}
