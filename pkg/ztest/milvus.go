package ztest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/milvus-io/milvus-sdk-go/v2/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zdm-io/zdm/pkg/milvusx"
)

// Tier is one kind of Milvus server on the test rig, with a source and a
// target server. Their differences are real and users meet them too.
type Tier struct {
	// Name: "milvus" (standalone, the primary tier), "lite3" or "lite2".
	Name string
	// Version is the server package's version.
	Version string
	// Source and Target are the servers' host:port.
	Source, Target string
}

// tierEnv maps a tier to its environment prefix in .testenv/env.
var tierEnv = []struct{ name, prefix string }{
	{"milvus", "ZDM_TEST_MILVUS"},
	{"lite3", "ZDM_TEST_LITE3"},
	{"lite2", "ZDM_TEST_LITE2"},
}

// Tiers returns every tier of the rig. A tier whose addresses are not in
// the environment ends t through Missing. The test shares the rig with
// tests of other packages running at the same time, each in databases of
// its own, until it ends (see WholePrimaryTier).
func Tiers(t testing.TB) []Tier {
	t.Helper()
	out := tiers(t)
	lockRig(t, out[0], syscall.LOCK_SH)
	return out
}

// WholePrimaryTier returns the standalone Milvus tier for a test that
// needs its servers to itself, such as a migration of a whole cluster:
// tests of other packages that use the rig wait until it ends, and it
// waits for theirs. It fails t when the target holds user collections.
func WholePrimaryTier(t testing.TB) Tier {
	t.Helper()
	tier := tiers(t)[0]
	lockRig(t, tier, syscall.LOCK_EX)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.NewClient(ctx, client.Config{Address: tier.Target})
	if err != nil {
		t.Fatalf("%s target %s: %v", tier.Name, tier.Target, err)
	}
	defer c.Close()
	left, err := milvusx.UserCollections(ctx, c)
	if err != nil {
		t.Fatalf("%s target %s: %v", tier.Name, tier.Target, err)
	}
	if len(left) > 0 {
		t.Fatalf("%s target %s is not empty (%v): restart the rig (make testenv-down testenv-up)", tier.Name, tier.Target, left)
	}
	return tier
}

// lockRig takes a lock on the rig's servers, shared or exclusive, for the
// rest of t: a file lock, since tests of several packages run in
// processes of their own.
func lockRig(t testing.TB, tier Tier, how int) {
	t.Helper()
	name := filepath.Join(os.TempDir(), "zdm-rig-"+sanitize(tier.Source)+".lock")
	f, err := os.OpenFile(name, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatalf("rig lock: %v", err)
	}
	if err := syscall.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		t.Fatalf("rig lock %s: %v", name, err)
	}
	t.Cleanup(func() { f.Close() }) // closing releases the lock
}

func tiers(t testing.TB) []Tier {
	t.Helper()
	var out []Tier
	for _, e := range tierEnv {
		src, tgt := os.Getenv(e.prefix+"_SOURCE"), os.Getenv(e.prefix+"_TARGET")
		if src == "" || tgt == "" {
			Missing(t, "Milvus tier "+e.name+" ("+e.prefix+"_SOURCE/_TARGET)")
		}
		out = append(out, Tier{Name: e.name, Version: os.Getenv(e.prefix + "_VERSION"), Source: src, Target: tgt})
	}
	return out
}

// PrimaryTier returns the standalone Milvus tier.
func PrimaryTier(t testing.TB) Tier {
	t.Helper()
	return Tiers(t)[0]
}

// Side is one Milvus server of a pair, with a client bound to the test's
// own database.
type Side struct {
	Addr     string
	Database string
	Client   client.Client
}

// Pair is a fresh source and target for one test.
type Pair struct {
	Tier   Tier
	Source Side
	Target Side
	// prefix is prepended to collection names on servers without
	// databases, where tests share the default database.
	prefix string
}

// Name returns the collection name a test should use for base, unique to
// the test on servers without databases.
func (p Pair) Name(base string) string { return p.prefix + base }

// NewPair creates a fresh database on the tier's source and target (named
// after the test, with a random suffix) and returns clients using it.
// milvus-lite 2.5.1 has no databases: there the pair uses the default
// database and a collection-name prefix (see Name). Everything the test
// made is dropped when it ends.
func NewPair(t testing.TB, tier Tier) Pair {
	t.Helper()
	suffix := make([]byte, 4)
	if _, err := rand.Read(suffix); err != nil {
		t.Fatal(err)
	}
	db := "zt_" + sanitize(t.Name()) + "_" + hex.EncodeToString(suffix)
	p := Pair{Tier: tier}
	var err error
	p.Source, err = newSide(t, tier.Source, db)
	if err != nil {
		t.Fatalf("%s source %s: %v", tier.Name, tier.Source, err)
	}
	p.Target, err = newSide(t, tier.Target, db)
	if err != nil {
		t.Fatalf("%s target %s: %v", tier.Name, tier.Target, err)
	}
	if p.Source.Database == "default" {
		p.prefix = db + "_"
	}
	return p
}

func newSide(t testing.TB, addr, name string) (Side, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := client.NewClient(ctx, client.Config{Address: addr})
	if err != nil {
		return Side{}, err
	}
	defer admin.Close()
	db := name
	err = admin.CreateDatabase(ctx, db)
	switch {
	case status.Code(err) == codes.Unimplemented:
		db = "default"
	case err != nil:
		return Side{}, err
	}
	c, err := client.NewClient(ctx, client.Config{Address: addr, DBName: db})
	if err != nil {
		return Side{}, err
	}
	s := Side{Addr: addr, Database: db, Client: c}
	t.Cleanup(func() { dropSide(t, s, name) })
	return s, nil
}

// dropSide drops what the test created: its database, or on servers
// without databases the collections whose names start with name.
func dropSide(t testing.TB, s Side, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	defer s.Client.Close()
	names, err := milvusx.CollectionNames(ctx, s.Client)
	if err != nil {
		t.Errorf("cleanup %s: %v", s.Addr, err)
		return
	}
	for _, coll := range names {
		if s.Database == "default" && !strings.HasPrefix(coll, name+"_") {
			continue
		}
		if err := s.Client.DropCollection(ctx, coll); err != nil {
			t.Errorf("cleanup %s: drop collection %s: %v", s.Addr, coll, err)
		}
	}
	if s.Database != "default" {
		if err := s.Client.DropDatabase(ctx, s.Database); err != nil {
			t.Errorf("cleanup %s: drop database %s: %v", s.Addr, s.Database, err)
		}
	}
}

func sanitize(name string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	s := b.String()
	if len(s) > 30 {
		s = s[:30]
	}
	return s
}
