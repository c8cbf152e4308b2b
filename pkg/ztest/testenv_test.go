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

// testRig runs deploy/testenv/testenv.sh for a rig of its own: the tiers
// given, in a temporary directory, on ports shifted by rigOffset, with the
// shared rig's venvs.
type testRig struct {
	t      *testing.T
	script string
	env    []string
	dir    string
}

func newTestRig(t *testing.T, tiers string) *testRig {
	root, err := filepath.Abs("../..")
	require.NoError(t, err)
	venvs := filepath.Join(root, ".testenv")
	if _, err := os.Stat(filepath.Join(venvs, "venv-milvus", ".installed")); err != nil {
		ztest.Missing(t, "the rig's venvs (.testenv/venv-milvus)")
	}
	dir := t.TempDir()
	r := &testRig{t: t, script: filepath.Join(root, "deploy", "testenv", "testenv.sh"), dir: dir,
		env: append(os.Environ(), "ZDM_TESTENV_DIR="+dir, "ZDM_TESTENV_VENVS="+venvs, "ZDM_TESTENV_TIERS="+tiers,
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

// addrs are the servers' addresses as the rig wrote them to its env
// file, by variable (ZDM_TEST_MILVUS_TARGET).
func (r *testRig) addrs() map[string]string {
	r.t.Helper()
	f, err := os.Open(filepath.Join(r.dir, "env"))
	require.NoError(r.t, err)
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "export "); ok {
			if name, addr, ok := strings.Cut(v, "="); ok && strings.HasPrefix(name, "ZDM_TEST_") && strings.Contains(addr, ":") {
				out[name] = addr
			}
		}
	}
	require.NoError(r.t, sc.Err())
	return out
}

// target is the standalone target's address as the rig wrote it.
func (r *testRig) target() string {
	r.t.Helper()
	addr, ok := r.addrs()["ZDM_TEST_MILVUS_TARGET"]
	require.True(r.t, ok, "no ZDM_TEST_MILVUS_TARGET in %s/env", r.dir)
	return addr
}

// ports is every port the rig's servers bind, as the script lists them.
func (r *testRig) ports() []int {
	r.t.Helper()
	var out []int
	for _, line := range strings.Split(strings.TrimSpace(r.mustRun("ports")), "\n") {
		fields := strings.Fields(line)
		require.GreaterOrEqual(r.t, len(fields), 2, "ports: %q", line)
		for _, f := range fields[1:] {
			p, err := strconv.Atoi(f)
			require.NoError(r.t, err, "ports: %q", line)
			out = append(out, p)
		}
	}
	return out
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
	r := newTestRig(t, "milvus")
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

// TestIntegrationRigDownThenUp runs down and up back to back with every
// tier, then up with the target's port held by another process: every
// port of every server must be free once down returns, up must start
// every server again on the address it writes to its env file, and a
// taken port must be refused by name rather than let the server move to
// the next one.
func TestIntegrationRigDownThenUp(t *testing.T) {
	ztest.Integration(t)
	r := newTestRig(t, "milvus lite3 lite2")
	r.mustRun("up")
	want := r.addrs()
	require.Len(t, want, 6, "a source and a target for each of three tiers: %v", want)
	r.mustRun("down")
	ports := r.ports()
	require.Len(t, ports, 2*11+4, "eleven ports for each standalone server, one for each lite one")
	for _, p := range ports {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p), time.Second)
		if err == nil {
			c.Close()
		}
		require.Error(t, err, "port %d still open after down returned", p)
	}
	require.NoFileExists(t, filepath.Join(r.dir, "env"), "down removes the addresses of servers that no longer run")
	r.mustRun("up")
	require.Equal(t, want, r.addrs(), "every server on the address it had")
	for _, addr := range want {
		answers(t, addr)
	}
	r.mustRun("down")

	target := want["ZDM_TEST_MILVUS_TARGET"]
	lis, err := net.Listen("tcp", target)
	require.NoError(t, err)
	defer lis.Close()
	out, err := r.run("up")
	require.Error(t, err, "up must fail when the target's port is taken:\n%s", out)
	require.Contains(t, out, fmt.Sprintf("port %d for milvus-target is taken", 19630+rigOffset))
	require.NotContains(t, out, "ready on", "nothing starts when a port is taken")
	require.NoFileExists(t, filepath.Join(r.dir, "env"), "no addresses written by an up that failed")
	next := fmt.Sprintf("127.0.0.1:%d", 19631+rigOffset)
	if c, err := net.DialTimeout("tcp", next, time.Second); err == nil {
		c.Close()
		t.Fatalf("a server listens on %s: the target moved to another port", next)
	}
}
