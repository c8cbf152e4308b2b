package main_test

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/zdm-io/zdm/pkg/ztest"
	lagpb "github.com/zdm-io/zdm/proto/zdm/lag/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// binaryProcess is bin/zdm run as a process on a fixed gRPC address and
// data directory, so a restart finds its embedded JetStream again.
type binaryProcess struct {
	t    *testing.T
	args []string
	cmd  *exec.Cmd
	logs *syncBuffer
	exit chan error
}

func startBinary(t *testing.T, args ...string) *binaryProcess {
	t.Helper()
	bin, err := zdmBinary()
	require.NoError(t, err)
	p := &binaryProcess{t: t, args: args, logs: &syncBuffer{}, exit: make(chan error, 1)}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	require.NoError(t, p.cmd.Start())
	go func() { p.exit <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.exit
		}
		// ZDM_TEST_LOGS=1 prints the logs of a failed test, =all always.
		if v := os.Getenv("ZDM_TEST_LOGS"); (t.Failed() && v != "") || v == "all" {
			t.Logf("zdm %s:\n%s", strings.Join(args, " "), p.logs.String())
		}
	})
	return p
}

// sigterm asks the process to stop and returns how long it took and its
// exit error, failing after limit.
func (p *binaryProcess) sigterm(limit time.Duration) (time.Duration, error) {
	p.t.Helper()
	start := time.Now()
	require.NoError(p.t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-p.exit:
		return time.Since(start), err
	case <-time.After(limit):
		p.t.Fatalf("zdm still running %s after SIGTERM; logs:\n%s", limit, p.logs)
	}
	return 0, nil
}

// stoppedSteps are the shutdown steps in the order the logs report them.
func (p *binaryProcess) stoppedSteps() []string {
	var steps []string
	for _, line := range strings.Split(p.logs.String(), "\n") {
		var rec struct{ Msg, Step string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "stopped" {
			steps = append(steps, rec.Step)
		}
	}
	return steps
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

func waitHealthy(t *testing.T, addr string, logs *syncBuffer) {
	t.Helper()
	conn := dial(t, addr)
	ztest.Eventually(t, 30*time.Second, func() bool {
		st, err := healthOf(t, conn, "")
		return err == nil && st == healthpb.HealthCheckResponse_SERVING
	}, "zdm not SERVING; logs:\n%s", logs)
}

// stoppable is bin/zdm on a fixed address and data directory with a short
// shutdown timeout, clusters "src" and "tgt" registered and a throttled
// OFFLINE migration copying between them: what the SIGTERM tests stop
// and start again.
type stoppable struct {
	t    *testing.T
	args []string
	addr string
	p    *binaryProcess
	conn *grpc.ClientConn
	mig  zdmpb.MigrationServiceClient
}

// termTimeout is the stoppable process's --shutdown-timeout.
const termTimeout = 5 * time.Second

func startStoppable(t *testing.T, ctx context.Context, srcAddr, tgtAddr, id string, extra ...string) *stoppable {
	t.Helper()
	addr := freeAddr(t)
	args := append([]string{"-grpc-addr", addr, "-metrics-addr", "127.0.0.1:0", "-data-dir", t.TempDir(),
		"-shutdown-timeout", termTimeout.String()}, extra...)
	p := startBinary(t, args...)
	waitHealthy(t, addr, p.logs)
	conn := dial(t, addr)
	s := &stoppable{t: t, args: args, addr: addr, p: p, conn: conn, mig: zdmpb.NewMigrationServiceClient(conn)}
	registerPair(t, ctx, zdmpb.NewClusterServiceClient(conn), srcAddr, tgtAddr)
	// A throttle keeps the copy running while the process is stopped.
	throttledOffline(t, ctx, s.mig, id)
	return s
}

// sigterm stops the process and requires exit 0 within the shutdown
// timeout (plus the process's own exit); it returns how long it took.
func (s *stoppable) sigterm() time.Duration {
	s.t.Helper()
	took, exitErr := s.p.sigterm(termTimeout + 3*time.Second)
	require.NoError(s.t, exitErr, "exit status after SIGTERM; logs:\n%s", s.p.logs)
	require.Less(s.t, took, termTimeout+time.Second, "stopped within --shutdown-timeout (plus the process's own exit)")
	return took
}

// restartAndComplete starts the process again on the same data
// directory: the copy goes on from its checkpoints and completes, the
// target's collection db.items equals the source's with rows rows, none
// twice; then it stops the process again.
func (s *stoppable) restartAndComplete(ctx context.Context, id, srcAddr, tgtAddr, db string, rows int64) {
	s.t.Helper()
	s.p = startBinary(s.t, s.args...)
	waitHealthy(s.t, s.addr, s.p.logs)
	m := waitMigration(s.t, ctx, s.mig, id, 2*time.Minute, terminal, nil)
	require.Equal(s.t, zdmpb.MigrationState_MIGRATION_STATE_COMPLETED, m.GetState(), "error: %v; logs:\n%s", m.GetError(), s.p.logs)
	report := compareSides(s.t, ctx, srcAddr, tgtAddr, db, "items")
	require.True(s.t, report.Match(), report.String())
	require.Equal(s.t, rows, report.TargetCount)
	require.Equal(s.t, report.TargetCount, report.TargetDistinct, "no row twice")
	_, exitErr := s.p.sigterm(termTimeout + 3*time.Second)
	require.NoError(s.t, exitErr)
}

// TestE2ESigtermDuringCopy sends SIGTERM to bin/zdm while a copy runs, a
// verification runs and two WatchMigration streams are open: the streams
// end with UNAVAILABLE, the verification returns,
// the process stops in the documented order and exits 0 within its
// shutdown timeout, and after a restart the copy resumes and the target
// equals the source.
func TestE2ESigtermDuringCopy(t *testing.T) {
	ztest.Integration(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	srcAddr, tgtAddr := ztest.NewServer(t, "lite3"), ztest.NewServer(t, "lite3")
	const rows = 12000
	seedShop(t, ctx, srcAddr, rows)
	s := startStoppable(t, ctx, srcAddr, tgtAddr, "term")

	ended := make(chan error, 2)
	for range 2 {
		w, err := s.mig.WatchMigration(ctx, &zdmpb.WatchMigrationRequest{MigrationId: "term"})
		require.NoError(t, err)
		go func() {
			for {
				if _, err := w.Recv(); err != nil {
					ended <- err
					return
				}
			}
		}()
	}
	copyingWithRows(t, ctx, s.mig, "term")

	// A verification in flight: the source against itself, in small ranges.
	verified := make(chan error, 1)
	go func() {
		_, err := lagpb.NewLagMonitorServiceClient(s.conn).Verify(ctx, &lagpb.VerifyRequest{MigrationId: "term", RangeRows: 100,
			Source: &zdmpb.ClusterConnection{Endpoint: srcAddr}, Target: &zdmpb.ClusterConnection{Endpoint: srcAddr}})
		verified <- err
	}()
	time.Sleep(200 * time.Millisecond) // not a wait for a condition: lets the call reach the server
	took := s.sigterm()
	t.Logf("stopped %s after SIGTERM", took.Round(time.Millisecond))
	for range 2 {
		select {
		case err := <-ended:
			require.Equal(t, codes.Unavailable, status.Code(err), "a watch is ended by the server at shutdown: %v", err)
		case <-time.After(5 * time.Second):
			t.Fatal("a watch stream was not ended by the shutdown")
		}
	}
	select {
	case err := <-verified:
		// It finished within the API's share of the timeout, or was cut
		// short when that ran out; either way the caller got an answer.
		t.Logf("verification in flight at SIGTERM: %v", status.Code(err))
	case <-time.After(5 * time.Second):
		t.Fatal("the verification in flight got no answer")
	}
	// The API stops first, then the services in reverse order of start,
	// then the bus, the embedded NATS server and telemetry.
	require.Equal(t, []string{"gRPC API", "metrics endpoint", "stage announcements", "coordinator", "lag-monitor", "cdc-streamer", "snapshot-copier",
		"NATS connection drain", "embedded NATS", "metrics provider", "trace export"}, s.p.stoppedSteps(), "logs:\n%s", s.p.logs)
	require.NotContains(t, s.p.logs.String(), "did not finish cleanly")

	s.restartAndComplete(ctx, "term", srcAddr, tgtAddr, "shop", rows)
}

// TestE2ESigtermWithTargetDown sends SIGTERM to bin/zdm while its copy
// retries a target that died: the process still stops within its shutdown
// timeout and exits 0. Restarted, with the target back, the copy resumes
// from its checkpoints and the target equals the source. The target is
// milvus-lite 2.5, which keeps what it acknowledged across a crash.
func TestE2ESigtermWithTargetDown(t *testing.T) {
	ztest.Integration(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	srcAddr, tgt := ztest.NewServer(t, "lite2"), ztest.StartServer(t, "lite2")
	const rows = 12000
	seedDefault(t, ctx, srcAddr, rows)
	s := startStoppable(t, ctx, srcAddr, tgt.Addr, "termdown", "-cluster-down-timeout", "5m")
	copyingWithRows(t, ctx, s.mig, "termdown")

	tgt.Kill()
	waitMigration(t, ctx, s.mig, "termdown", time.Minute, func(m *zdmpb.Migration) bool { return len(m.GetClusterProblems()) > 0 }, nil)
	took := s.sigterm()
	t.Logf("stopped %s after SIGTERM with the target down", took.Round(time.Millisecond))

	tgt.Start()
	s.restartAndComplete(ctx, "termdown", srcAddr, tgt.Addr, "default", rows)
}
