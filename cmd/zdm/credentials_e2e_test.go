package main_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/zdm-io/zdm/pkg/natsbus"
	"github.com/zdm-io/zdm/pkg/ztest"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// password is the clusters' password in the credentials tests: it must
// appear nowhere on the bus or on its disk.
const password = "Pa55-word-that-must-stay-secret"

// startSealed starts zdm with a credentials key and an embedded JetStream
// that writes to a directory of the test's, and registers "src" and
// "tgt" with a user and password.
func startSealed(t *testing.T, ctx context.Context, srcAddr, tgtAddr string, args ...string) (p process, dataDir string, mig zdmpb.MigrationServiceClient) {
	t.Helper()
	key := make([]byte, 32)
	_, err := rand.Read(key)
	require.NoError(t, err)
	dataDir = t.TempDir()
	p = start(t, append([]string{"-credentials-key", base64.StdEncoding.EncodeToString(key), "-data-dir", dataDir, "-nats-listen", "127.0.0.1:0"}, args...)...)
	conn := dial(t, p.addrs.GRPC)
	clusters := zdmpb.NewClusterServiceClient(conn)
	for id, addr := range map[string]string{"src": srcAddr, "tgt": tgtAddr} {
		_, err := clusters.RegisterCluster(ctx, &zdmpb.RegisterClusterRequest{ClusterId: id, Connection: &zdmpb.ClusterConnection{
			Endpoint: addr, Auth: &zdmpb.ClusterConnection_UserPassword{UserPassword: &zdmpb.UserPassword{Username: "root", Password: password}}}})
		require.NoError(t, err)
	}
	return p, dataDir, zdmpb.NewMigrationServiceClient(conn)
}

// TestE2ENoCredentialsAtRest runs an OFFLINE migration between clusters
// registered with a user and password, with a credentials key, then reads
// every message of every stream and KV bucket on the bus, and every file
// the embedded JetStream wrote to disk: the password appears nowhere in
// plain form.
func TestE2ENoCredentialsAtRest(t *testing.T) {
	ztest.Integration(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srcAddr, tgtAddr := ztest.NewServer(t, "lite3"), ztest.NewServer(t, "lite3")
	seedShop(t, ctx, srcAddr, 2000)
	p, dataDir, mig := startSealed(t, ctx, srcAddr, tgtAddr)
	_, err := mig.CreateMigration(ctx, &zdmpb.CreateMigrationRequest{MigrationId: "secret", Type: zdmpb.MigrationType_MIGRATION_TYPE_OFFLINE,
		SourceClusterId: "src", TargetClusterId: "tgt", Options: &zdmpb.MigrationOptions{WorkUnitRows: 1000}})
	require.NoError(t, err)
	m := waitMigration(t, ctx, mig, "secret", 2*time.Minute, terminal, nil)
	require.Equal(t, zdmpb.MigrationState_MIGRATION_STATE_COMPLETED, m.GetState(), "error: %v", m.GetError())
	requireNoPassword(t, ctx, p.addrs.NATS, dataDir)
}

// TestE2ENoCredentialsAtRestZeroDowntime does the same for a
// ZERO_DOWNTIME migration that applications write through the gateway the
// whole time, finalised by a switchover, so that the change stream and
// the buckets of the gateways, the applier and the switchover hold data
// too.
func TestE2ENoCredentialsAtRestZeroDowntime(t *testing.T) {
	ztest.Integration(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	srcAddr, tgtAddr := ztest.NewServer(t, "lite3"), ztest.NewServer(t, "lite3")
	seedShop(t, ctx, srcAddr, 2000)
	gw := freeAddr(t)
	p, dataDir, mig := startSealed(t, ctx, srcAddr, tgtAddr, "-gateway-cluster", "src", "-gateway-addr", gw)
	l := startLoad(t, ctx, gw, "shop", false)
	_, err := mig.CreateMigration(ctx, &zdmpb.CreateMigrationRequest{MigrationId: "secret", Type: zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME,
		SourceClusterId: "src", TargetClusterId: "tgt", Options: &zdmpb.MigrationOptions{WorkUnitRows: 1000}})
	require.NoError(t, err)
	m := waitMigration(t, ctx, mig, "secret", 3*time.Minute, func(m *zdmpb.Migration) bool {
		return m.GetState() == zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE || terminal(m)
	}, nil)
	require.Equal(t, zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE, m.GetState(), "error: %v", m.GetError())
	// The applier frees the changes it applied: read them while the
	// writers go on, until some are there to read.
	js := jetStream(t, p.addrs.NATS)
	ztest.Eventually(t, time.Minute, func() bool { return scanStream(t, ctx, js, natsbus.ChangesStream) > 0 },
		"no change on %s to read while writes go on", natsbus.ChangesStream)
	_, err = mig.Switchover(ctx, &zdmpb.SwitchoverRequest{MigrationId: "secret", MaxWritePause: durationpb.New(10 * time.Second)})
	require.NoError(t, err)
	m = waitMigration(t, ctx, mig, "secret", 2*time.Minute, terminal, nil)
	require.Equal(t, zdmpb.MigrationState_MIGRATION_STATE_COMPLETED, m.GetState(), "error: %v", m.GetError())
	require.NotNil(t, m.GetSwitchover().GetSwitchTime(), "finalised by a switchover")
	l.end(t)

	read := requireNoPassword(t, ctx, p.addrs.NATS, dataDir)
	for _, stream := range []string{natsbus.GatewaysBucket.Stream(), natsbus.AppliedBucket.Stream(), natsbus.SwitchoversBucket.Stream()} {
		require.Positive(t, read[stream], "stream %s held messages to read", stream)
	}
}

// scanStream reads every message the stream name holds now, fails t if
// one holds the password, and returns how many it read.
func scanStream(t *testing.T, ctx context.Context, js jetstream.JetStream, name string) int {
	t.Helper()
	s, err := js.Stream(ctx, name)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	read := 0
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		msg, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // deleted or superseded
		}
		require.NoError(t, err)
		read++
		require.False(t, bytes.Contains(msg.Data, []byte(password)), "stream %s message %d (%s) holds the password", name, seq, msg.Subject)
		for h, vs := range msg.Header {
			for _, v := range vs {
				require.NotContains(t, v, password, "stream %s message %d header %s", name, seq, h)
			}
		}
	}
	return read
}

// requireNoPassword reads every message of every stream and KV bucket on
// the bus at natsURL, and every file under dataDir: none may hold the
// password. It returns how many messages it read in each stream.
func requireNoPassword(t *testing.T, ctx context.Context, natsURL, dataDir string) map[string]int {
	t.Helper()
	js := jetStream(t, natsURL)
	read, messages := map[string]int{}, 0
	names := js.StreamNames(ctx)
	for name := range names.Name() {
		read[name] = scanStream(t, ctx, js, name)
		messages += read[name]
	}
	require.NoError(t, names.Err())
	require.GreaterOrEqual(t, len(read), 8, "the four streams and the KV buckets were read")
	require.Positive(t, messages)

	files := 0
	require.NoError(t, filepath.WalkDir(dataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		require.False(t, bytes.Contains(data, []byte(password)), "%s holds the password", path)
		return nil
	}))
	require.Positive(t, files)
	t.Logf("read %d messages in %d streams and %d files: no password in plain form", messages, len(read), files)
	return read
}
