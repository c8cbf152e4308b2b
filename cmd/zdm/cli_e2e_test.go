package main_test

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/milvus-io/milvus-sdk-go/v2/client"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/zdm-io/zdm/pkg/ztest"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// cli runs the zdm binary as a client with args and returns its stdout,
// stderr and exit code.
func cli(t *testing.T, addr string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	bin, err := zdmBinary()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(cmd.Environ(), "ZDM_ADDR="+addr)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return out.String(), errOut.String(), exit.ExitCode()
	}
	require.NoError(t, err)
	return out.String(), errOut.String(), 0
}

// TestE2ECLI drives a whole OFFLINE migration with the zdm client against
// a running zdm: clusters registered, listed and shown (as text and as the
// API's JSON), the migration created and watched to COMPLETED, with every
// error a one-line message and an exit code by kind.
func TestE2ECLI(t *testing.T) {
	ztest.Integration(t)
	ctx := context.Background()
	srcAddr, tgtAddr := ztest.NewServer(t, "lite3"), ztest.NewServer(t, "lite3")
	seedShop(t, ctx, srcAddr, 1200)
	p := start(t)
	addr := p.addrs.GRPC

	out, errOut, code := cli(t, addr, "cluster", "add", "src", "--endpoint", srcAddr)
	require.Zero(t, code, errOut)
	require.Contains(t, out, "endpoint  "+srcAddr)
	_, errOut, code = cli(t, addr, "cluster", "add", "tgt", "--endpoint", tgtAddr)
	require.Zero(t, code, errOut)
	out, _, code = cli(t, addr, "cluster", "list")
	require.Zero(t, code)
	require.Regexp(t, `(?m)^ID\s+ENDPOINT\s+VERSION\s+LOCK\s+MIGRATION$`, out)
	require.Regexp(t, `(?m)^src\s+`+srcAddr+`\s+\S+\s+UNLOCKED`, out)
	out, _, code = cli(t, addr, "cluster", "show", "tgt", "--output", "json")
	require.Zero(t, code)
	var shown zdmpb.GetClusterResponse
	require.NoError(t, protojson.Unmarshal([]byte(out), &shown), out)
	require.Equal(t, tgtAddr, shown.GetCluster().GetEndpoint())

	// The migration, watched as it happens until it completes.
	out, errOut, code = cli(t, addr, "migrate", "create", "--id", "cli1", "--type", "offline", "--source", "src", "--target", "tgt",
		"--work-unit-rows", "1000", "--watch")
	require.Zero(t, code, errOut)
	t.Logf("zdm migrate create --watch:\n%s", out)
	require.Contains(t, out, "PENDING -> PREPARING_TARGET")
	require.Contains(t, out, "VERIFYING -> COMPLETED")
	require.Contains(t, out, "/1200 rows")
	out, _, code = cli(t, addr, "migrate", "show", "cli1")
	require.Zero(t, code)
	t.Logf("zdm migrate show:\n%s", out)
	require.Regexp(t, `(?m)^state\s+COMPLETED$`, out)
	require.Regexp(t, `(?m)^\s+shop\.items\s+verified\s+1200/1200 rows \(100%\)`, out)
	out, _, code = cli(t, addr, "migrate", "list", "--output", "json")
	require.Zero(t, code)
	var listed zdmpb.ListMigrationsResponse
	require.NoError(t, protojson.Unmarshal([]byte(out), &listed), out)
	require.Len(t, listed.GetMigrations(), 1)

	out, errOut, code = cli(t, addr, "verify", "--source-endpoint", srcAddr, "--target-endpoint", tgtAddr)
	require.Zero(t, code, errOut)
	require.Regexp(t, `(?m)^shop\.items\s+1200\s+1200\s+0$`, out)
	insertItems(t, ctx, sourceClient(t, ctx, srcAddr), "", 5000, 5000)
	out, errOut, code = cli(t, addr, "verify", "--source-endpoint", srcAddr, "--target-endpoint", tgtAddr)
	require.Equal(t, 4, code, "%s%s", out, errOut)
	require.Contains(t, errOut, "source and target differ")

	// Errors: one line, and the exit code tells their kinds apart.
	for _, c := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"migrate", "show", "nope"}, 3, `migration "nope" does not exist`},
		{[]string{"migrate", "cancel", "cli1"}, 4, "COMPLETED"},
		{[]string{"migrate", "throttle", "cli1", "--rows-per-s", "-1"}, 2, "must not be negative"},
		{[]string{"migrate", "frobnicate"}, 2, "want create, list"},
		{[]string{"migrate", "show", "cli1", "--addr", "127.0.0.1:1"}, 6, "does not answer"},
	} {
		_, errOut, code := cli(t, addr, c.args...)
		require.Equal(t, c.code, code, "%v: %s", c.args, errOut)
		require.Equal(t, 1, strings.Count(errOut, "\n"), "%v: one line: %q", c.args, errOut)
		require.Contains(t, errOut, c.says, "%v", c.args)
	}
}

// sourceClient connects to the Milvus at addr, database shop.
func sourceClient(t *testing.T, ctx context.Context, addr string) client.Client {
	t.Helper()
	c, err := client.NewClient(ctx, client.Config{Address: addr, DBName: "shop"})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}
