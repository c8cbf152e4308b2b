package ztest

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// NewServer starts a fresh, empty Milvus server of its own for t and
// returns its host:port; it is stopped when t ends. tier is "lite2" (the
// milvus-lite 2.5 C++ server, up in well under a second) or "lite3". Use it
// where a test needs a cluster nobody else writes to, such as a migration
// target, which must be empty.
func NewServer(t testing.TB, tier string) string {
	t.Helper()
	return StartServer(t, tier).Addr
}

// Server is a Milvus server of a test's own, which the test can kill and
// start again on the same address and data, as a cluster that goes down
// and comes back.
type Server struct {
	// Addr is the server's host:port.
	Addr string

	t      testing.TB
	tier   string
	bin    string
	dir    string
	port   int
	cmd    *exec.Cmd
	exited chan struct{}
}

// StartServer is NewServer returning the server itself.
func StartServer(t testing.TB, tier string) *Server {
	t.Helper()
	var env string
	switch tier {
	case "lite2":
		env = "ZDM_TEST_LITE2_SERVER"
	case "lite3":
		env = "ZDM_TEST_LITE3_SERVER"
	default:
		t.Fatalf("ztest.StartServer: no fresh servers of tier %q; use lite2 or lite3", tier)
	}
	bin := os.Getenv(env)
	if bin == "" {
		Missing(t, "Milvus server program "+env)
	}
	port := freePort(t)
	s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), t: t, tier: tier, bin: bin, dir: t.TempDir(), port: port}
	s.Start()
	t.Cleanup(s.Kill)
	return s
}

// Start starts the server (again), on its address and data, and waits
// until it listens.
func (s *Server) Start() {
	s.t.Helper()
	var cmd *exec.Cmd
	if s.tier == "lite2" {
		// The C++ server takes: database file, listen address, log level.
		cmd = exec.Command(s.bin, filepath.Join(s.dir, "milvus.db"), s.Addr, "ERROR")
		cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+filepath.Dir(s.bin))
	} else {
		cmd = exec.Command(s.bin, "server", "--data-dir", s.dir, "--host", "127.0.0.1", "--port", strconv.Itoa(s.port))
	}
	cmd.Dir = s.dir
	logf, err := os.OpenFile(filepath.Join(s.dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start %s server: %v", s.tier, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(exited)
	}()
	s.cmd, s.exited = cmd, exited
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", s.Addr, 200*time.Millisecond); err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(logf.Name())
			s.t.Fatalf("%s server exited during start-up:\n%s", s.tier, log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s server not listening on %s within 30s", s.tier, s.Addr)
		}
	}
}

// Kill stops the server with SIGKILL, as a crash would, and waits until it
// has exited. Killing a stopped server does nothing.
func (s *Server) Kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
