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
	var env string
	switch tier {
	case "lite2":
		env = "ZDM_TEST_LITE2_SERVER"
	case "lite3":
		env = "ZDM_TEST_LITE3_SERVER"
	default:
		t.Fatalf("ztest.NewServer: no fresh servers of tier %q; use lite2 or lite3", tier)
	}
	bin := os.Getenv(env)
	if bin == "" {
		Missing(t, "Milvus server program "+env)
	}
	port := freePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	dir := t.TempDir()
	var cmd *exec.Cmd
	if tier == "lite2" {
		// The C++ server takes: database file, listen address, log level.
		cmd = exec.Command(bin, filepath.Join(dir, "milvus.db"), addr, "ERROR")
		cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+filepath.Dir(bin))
	} else {
		cmd = exec.Command(bin, "server", "--data-dir", dir, "--host", "127.0.0.1", "--port", strconv.Itoa(port))
	}
	cmd.Dir = dir
	logf, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s server: %v", tier, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		logf.Close()
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return addr
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("%s server exited during start-up:\n%s", tier, log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s server not listening on %s within 30s", tier, addr)
		}
	}
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
