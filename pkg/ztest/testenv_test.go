package ztest_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/milvus-io/milvus-sdk-go/v2/client"
	"github.com/stretchr/testify/require"

	"github.com/zdm-io/zdm/pkg/ztest"
)

// rigOffset moves the second rig's ports clear of the shared rig's.
const rigOffset = 3000

// testRig runs deploy/testenv/testenv.sh for a rig of its own: the
// standalone tier only, in a temporary directory, on ports shifted by
// rigOffset, with the shared rig's venvs.
type testRig struct {
	t      *testing.T
	script string
	env    []string
	dir    string
}

func newTestRig(t *testing.T) *testRig {
	root, err := filepath.Abs("../..")
	require.NoError(t, err)
	venvs := filepath.Join(root, ".testenv")
	if _, err := os.Stat(filepath.Join(venvs, "venv-milvus", ".installed")); err != nil {
		ztest.Missing(t, "the rig's venvs (.testenv/venv-milvus)")
	}
	dir := t.TempDir()
	r := &testRig{t: t, script: filepath.Join(root, "deploy", "testenv", "testenv.sh"), dir: dir,
		env: append(os.Environ(), "ZDM_TESTENV_DIR="+dir, "ZDM_TESTENV_VENVS="+venvs, "ZDM_TESTENV_TIERS=milvus",
			"ZDM_TESTENV_PORT_OFFSET="+strconv.Itoa(rigOffset), "ZDM_TESTENV_PORT_WAIT=3")}
	t.Cleanup(func() {
		if out, err := r.run("down"); err != nil {
			t.Errorf("testenv down: %v\n%s", err, out)
		}
	})
	return r
}

// run runs the script with cmd and returns what it printed.
func (r *testRig) run(cmd string) (string, error) {
	c := exec.Command("bash", r.script, cmd)
	c.Env = r.env
	out, err := c.CombinedOutput()
	return string(out), err
}

func (r *testRig) mustRun(cmd string) string {
	r.t.Helper()
	out, err := r.run(cmd)
	require.NoError(r.t, err, "testenv %s:\n%s", cmd, out)
	return out
}

// target is the target's address as the rig wrote it to its env file.
func (r *testRig) target() string {
	r.t.Helper()
	f, err := os.Open(filepath.Join(r.dir, "env"))
	require.NoError(r.t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "export ZDM_TEST_MILVUS_TARGET="); ok {
			return v
		}
	}
	r.t.Fatalf("no ZDM_TEST_MILVUS_TARGET in %s/env", r.dir)
	return ""
}

// answers checks that a Milvus server answers at addr.
func answers(t *testing.T, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.NewClient(ctx, client.Config{Address: addr})
	require.NoError(t, err, addr)
	defer c.Close()
	_, err = c.ListCollections(ctx)
	require.NoError(t, err, addr)
}

// TestIntegrationRigRestartsDeadServer kills the Milvus binary inside the
// target's Python wrapper, which lives on: status must call the target
// dead, not running, and up must restart it and say so.
func TestIntegrationRigRestartsDeadServer(t *testing.T) {
	ztest.Integration(t)
	r := newTestRig(t)
	r.mustRun("up")
	want := fmt.Sprintf("127.0.0.1:%d", 19630+rigOffset)
	require.Equal(t, want, r.target())
	answers(t, want)

	pidData, err := os.ReadFile(filepath.Join(r.dir, "pids", "milvus-target.pid"))
	require.NoError(t, err)
	wrapper, err := strconv.Atoi(strings.TrimSpace(string(pidData)))
	require.NoError(t, err)
	out, err := exec.Command("pgrep", "-g", strconv.Itoa(wrapper)).Output()
	require.NoError(t, err)
	killed := 0
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		require.NoError(t, err)
		if pid != wrapper {
			require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
			killed++
		}
	}
	require.Positive(t, killed, "the wrapper %d has no server process to kill", wrapper)
	ztest.Eventually(t, 30*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", want, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	}, "the target's port never closed after its server was killed")
	require.NoError(t, syscall.Kill(wrapper, 0), "the wrapper must outlive its server for this test")

	status := r.mustRun("status")
	require.Contains(t, status, "milvus-target dead")
	require.NotContains(t, status, "milvus-target running")

	up := r.mustRun("up")
	require.Contains(t, up, "milvus-target: its process")
	require.Contains(t, up, "restarting it")
	require.NotContains(t, up, "milvus-source: its process", "a serving source must be left alone")
	answers(t, want)
	require.Contains(t, r.mustRun("status"), "milvus-target running")
}

// TestIntegrationRigDownThenUp runs down and up back to back, then up with
// the target's port held by another process: up must find every port free
// after down, and refuse a taken port by name rather than let the server
// move to the next one.
func TestIntegrationRigDownThenUp(t *testing.T) {
	ztest.Integration(t)
	r := newTestRig(t)
	r.mustRun("up")
	want := r.target()
	r.mustRun("down")
	for _, p := range []int{19530, 19630, 2479} {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p+rigOffset), time.Second)
		if err == nil {
			c.Close()
		}
		require.Error(t, err, "port %d still open after down returned", p+rigOffset)
	}
	r.mustRun("up")
	require.Equal(t, want, r.target())
	answers(t, want)
	r.mustRun("down")

	lis, err := net.Listen("tcp", want)
	require.NoError(t, err)
	defer lis.Close()
	out, err := r.run("up")
	require.Error(t, err, "up must fail when the target's port is taken:\n%s", out)
	require.Contains(t, out, fmt.Sprintf("port %d for milvus-target is taken", 19630+rigOffset))
	require.NotContains(t, out, "ready on", "nothing starts when a port is taken")
	next := fmt.Sprintf("127.0.0.1:%d", 19631+rigOffset)
	if c, err := net.DialTimeout("tcp", next, time.Second); err == nil {
		c.Close()
		t.Fatalf("a server listens on %s: the target moved to another port", next)
	}
}
