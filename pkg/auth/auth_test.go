package auth

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/metadata"

	"github.com/zdm-io/zdm/pkg/apierr"
)

func testKeys(t *testing.T) *Keys {
	t.Helper()
	file := "# zdm API keys\n\nops admin " + HashKey("admin-secret") + "\ndash viewer " + HashKey("viewer-secret") + "\n"
	k, err := ParseKeys(strings.NewReader(file))
	require.NoError(t, err)
	return k
}

func withKey(key string) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+key))
}

func TestAuthorize(t *testing.T) {
	k := testKeys(t)
	const create, get = "/zdm.v1.MigrationService/CreateMigration", "/zdm.v1.MigrationService/GetMigration"

	ctx, err := k.authorize(withKey("admin-secret"), create)
	require.NoError(t, err)
	require.Equal(t, "ops", Actor(ctx))
	ctx, err = k.authorize(withKey("viewer-secret"), get)
	require.NoError(t, err)
	require.Equal(t, "dash", Actor(ctx))

	_, err = k.authorize(withKey("viewer-secret"), create)
	require.ErrorIs(t, err, apierr.ErrPermissionDenied)
	require.ErrorContains(t, err, `API key "dash" has role viewer; /zdm.v1.MigrationService/CreateMigration needs admin`)
	_, err = k.authorize(withKey("guess"), get)
	require.ErrorIs(t, err, apierr.ErrUnauthenticated)
	_, err = k.authorize(context.Background(), get)
	require.ErrorIs(t, err, apierr.ErrUnauthenticated)
	require.ErrorContains(t, err, "authorization: Bearer <key>")
	_, err = k.authorize(metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "admin-secret")), get)
	require.ErrorIs(t, err, apierr.ErrUnauthenticated)

	_, err = k.authorize(context.Background(), "/grpc.health.v1.Health/Check")
	require.NoError(t, err, "health needs no key")
	_, err = k.authorize(withKey("viewer-secret"), "/zdm.copier.v1.SnapshotCopierService/SetThrottle")
	require.ErrorIs(t, err, apierr.ErrPermissionDenied, "internal APIs need admin")
}

func TestParseKeysRejects(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"ops admin", "line 1: want '<name> <role> sha256:<hex>'"},
		{"ops root " + HashKey("x"), `line 1: role "root"`},
		{"ops admin plain-secret", "line 1: hash must be sha256:"},
		{"a admin " + HashKey("x") + "\na viewer " + HashKey("y"), `line 2: key name "a" appears twice`},
		{"a admin " + HashKey("x") + "\nb viewer " + HashKey("x"), "line 2: the same key is listed twice"},
		{"# nothing\n", "no keys"},
	} {
		_, err := ParseKeys(strings.NewReader(tc.file))
		require.ErrorContains(t, err, tc.want, tc.file)
	}
}

func TestHashKeyMatchesSha256sum(t *testing.T) {
	// printf %s admin-secret | sha256sum
	require.Equal(t, "sha256:16175223c8ddce5ace0493c948569c211b03c4c6bb3d3e484434999448cffe01", HashKey("admin-secret"))
}
