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

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/zdm-io/zdm/pkg/ztest"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// TestE2ENoCredentialsAtRest runs a migration between clusters registered
// with a user and password, with a credentials key, then reads every
// message of every stream and KV bucket on the bus, and every file the
// embedded JetStream wrote to disk: the password appears nowhere in plain
// form.
func TestE2ENoCredentialsAtRest(t *testing.T) {
	ztest.Integration(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srcAddr, tgtAddr := ztest.NewServer(t, "lite3"), ztest.NewServer(t, "lite3")
	seedShop(t, ctx, srcAddr, 2000)

	key := make([]byte, 32)
	_, err := rand.Read(key)
	require.NoError(t, err)
	dataDir := t.TempDir()
	p := start(t, "-credentials-key", base64.StdEncoding.EncodeToString(key), "-data-dir", dataDir, "-nats-listen", "127.0.0.1:0")
	conn := dial(t, p.addrs.GRPC)
	clusters, mig := zdmpb.NewClusterServiceClient(conn), zdmpb.NewMigrationServiceClient(conn)
	const password = "Pa55-word-that-must-stay-secret"
	for id, addr := range map[string]string{"src": srcAddr, "tgt": tgtAddr} {
		_, err := clusters.RegisterCluster(ctx, &zdmpb.RegisterClusterRequest{ClusterId: id, Connection: &zdmpb.ClusterConnection{
			Endpoint: addr, Auth: &zdmpb.ClusterConnection_UserPassword{UserPassword: &zdmpb.UserPassword{Username: "root", Password: password}}}})
		require.NoError(t, err)
	}
	_, err = mig.CreateMigration(ctx, &zdmpb.CreateMigrationRequest{MigrationId: "secret", Type: zdmpb.MigrationType_MIGRATION_TYPE_OFFLINE,
		SourceClusterId: "src", TargetClusterId: "tgt", Options: &zdmpb.MigrationOptions{WorkUnitRows: 1000}})
	require.NoError(t, err)
	m := waitMigration(t, ctx, mig, "secret", 2*time.Minute, terminal, nil)
	require.Equal(t, zdmpb.MigrationState_MIGRATION_STATE_COMPLETED, m.GetState(), "error: %v", m.GetError())

	nc, err := nats.Connect(p.addrs.NATS)
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	streams, messages := 0, 0
	names := js.StreamNames(ctx)
	for name := range names.Name() {
		s, err := js.Stream(ctx, name)
		require.NoError(t, err)
		info, err := s.Info(ctx)
		require.NoError(t, err)
		streams++
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
			msg, err := s.GetMsg(ctx, seq)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue // deleted or superseded
			}
			require.NoError(t, err)
			messages++
			require.False(t, bytes.Contains(msg.Data, []byte(password)), "stream %s message %d (%s) holds the password", name, seq, msg.Subject)
			for h, vs := range msg.Header {
				for _, v := range vs {
					require.NotContains(t, v, password, "stream %s message %d header %s", name, seq, h)
				}
			}
		}
	}
	require.NoError(t, names.Err())
	require.GreaterOrEqual(t, streams, 8, "the four streams and the KV buckets were read")
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
	t.Logf("read %d messages in %d streams and %d files: no password in plain form", messages, streams, files)
}
