// Package auth checks the API keys that callers send as bearer tokens in
// gRPC metadata ("authorization: Bearer <key>") and the role each call
// needs. Keys are read from a file that holds only their SHA-256 hashes.
package auth

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/zdm-io/zdm/pkg/apierr"
)

// Role is what a key may do.
type Role int

// Roles, each including the ones before it.
const (
	RoleNone Role = iota
	// RoleViewer may get, list and watch.
	RoleViewer
	// RoleAdmin may also register, create, stop, switch over, cancel,
	// pause, resume and deregister.
	RoleAdmin
)

func (r Role) String() string {
	switch r {
	case RoleViewer:
		return "viewer"
	case RoleAdmin:
		return "admin"
	}
	return "none"
}

// Key is one API key as the keys file describes it.
type Key struct {
	Name string
	Role Role
	hash [sha256.Size]byte
}

// Keys are the known API keys, by hash.
type Keys struct {
	byHash map[[sha256.Size]byte]Key
}

// HashKey returns the hash a keys file stores for key, as
// "sha256:<hex>". It is what `printf %s KEY | sha256sum` prints, prefixed.
func HashKey(key string) string {
	h := sha256.Sum256([]byte(key))
	return "sha256:" + hex.EncodeToString(h[:])
}

// ParseKeys reads a keys file: one key per line as
//
//	<name> <role> sha256:<hex of the key's SHA-256>
//
// with role admin or viewer; blank lines and lines starting with # are
// ignored. Errors name the line.
func ParseKeys(r io.Reader) (*Keys, error) {
	k := &Keys{byHash: map[[sha256.Size]byte]Key{}}
	names := map[string]bool{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 {
			return nil, fmt.Errorf("line %d: want '<name> <role> sha256:<hex>', got %d fields", n, len(f))
		}
		key := Key{Name: f[0]}
		switch f[1] {
		case "admin":
			key.Role = RoleAdmin
		case "viewer":
			key.Role = RoleViewer
		default:
			return nil, fmt.Errorf("line %d: role %q: want admin or viewer", n, f[1])
		}
		hexHash, ok := strings.CutPrefix(f[2], "sha256:")
		b, err := hex.DecodeString(hexHash)
		if !ok || err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("line %d: hash must be sha256: and 64 hex digits (the file stores hashes, never keys)", n)
		}
		copy(key.hash[:], b)
		if names[key.Name] {
			return nil, fmt.Errorf("line %d: key name %q appears twice", n, key.Name)
		}
		if _, dup := k.byHash[key.hash]; dup {
			return nil, fmt.Errorf("line %d: the same key is listed twice", n)
		}
		names[key.Name] = true
		k.byHash[key.hash] = key
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(k.byHash) == 0 {
		return nil, fmt.Errorf("no keys: add a line '<name> admin sha256:<hex>'")
	}
	return k, nil
}

// LoadKeys reads the keys file at path.
func LoadKeys(path string) (*Keys, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("API keys file: %w", err)
	}
	defer f.Close()
	k, err := ParseKeys(f)
	if err != nil {
		return nil, fmt.Errorf("API keys file %s: %w", path, err)
	}
	return k, nil
}

// lookup returns the key whose hash matches presented.
func (k *Keys) lookup(presented string) (Key, bool) {
	key, ok := k.byHash[sha256.Sum256([]byte(presented))]
	return key, ok
}

// viewerMethods may be called with the viewer role; every other method of
// zdm's services needs admin.
var viewerMethods = map[string]bool{
	"/zdm.v1.MigrationService/GetMigration":   true,
	"/zdm.v1.MigrationService/ListMigrations": true,
	"/zdm.v1.MigrationService/WatchMigration": true,
	"/zdm.v1.ClusterService/GetCluster":       true,
	"/zdm.v1.ClusterService/ListClusters":     true,
}

// RequiredRole is the role a full gRPC method name needs. Health checks and
// reflection need none, so probes and grpcurl's list work without a key.
func RequiredRole(method string) Role {
	switch {
	case strings.HasPrefix(method, "/grpc.health.v1.Health/"), strings.HasPrefix(method, "/grpc.reflection."):
		return RoleNone
	case viewerMethods[method]:
		return RoleViewer
	}
	return RoleAdmin
}

// authorize checks ctx's bearer key for method and returns ctx with the
// key's name as the actor.
func (k *Keys) authorize(ctx context.Context, method string) (context.Context, error) {
	need := RequiredRole(method)
	if need == RoleNone {
		return ctx, nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return ctx, fmt.Errorf("%w: missing API key: send the metadata 'authorization: Bearer <key>'", apierr.ErrUnauthenticated)
	}
	presented, ok := strings.CutPrefix(vals[0], "Bearer ")
	if !ok || presented == "" {
		return ctx, fmt.Errorf("%w: authorization metadata must be 'Bearer <key>'", apierr.ErrUnauthenticated)
	}
	key, ok := k.lookup(presented)
	if !ok {
		return ctx, fmt.Errorf("%w: unknown API key", apierr.ErrUnauthenticated)
	}
	if key.Role < need {
		return ctx, fmt.Errorf("%w: API key %q has role %s; %s needs %s", apierr.ErrPermissionDenied, key.Name, key.Role, method, need)
	}
	return WithActor(ctx, key.Name), nil
}

// ServerOptions returns the interceptors that enforce k on a gRPC server.
func (k *Keys) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			ctx, err := k.authorize(ctx, info.FullMethod)
			if err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			ctx, err := k.authorize(ss.Context(), info.FullMethod)
			if err != nil {
				return err
			}
			return h(srv, &actorStream{ServerStream: ss, ctx: ctx})
		}),
	}
}

type actorStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *actorStream) Context() context.Context { return s.ctx }
