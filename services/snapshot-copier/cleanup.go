package copier

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-sdk-go/v2/client"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/zdm-io/zdm/pkg/milvusx"
	"github.com/zdm-io/zdm/pkg/natsbus"
)

// DropCopied undoes PrepareTarget: it drops from the target every
// collection the source has (with its aliases), then every database of the
// source it left empty, except the default one. The target was empty when
// the migration was created, so these are what zdm made. It returns the
// collections dropped.
func DropCopied(ctx context.Context, src, tgt client.Client) ([]string, error) {
	t, err := milvusx.Raw(tgt)
	if err != nil {
		return nil, err
	}
	fromSource, err := milvusx.UserCollections(ctx, src)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	onTarget, err := milvusx.UserCollections(ctx, tgt)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	var dropped []string
	for _, c := range fromSource {
		if !slices.Contains(onTarget, c) {
			continue
		}
		db, name, _ := strings.Cut(c, ".")
		if err := dropCollection(ctx, t, db, name); err != nil {
			return dropped, err
		}
		dropped = append(dropped, c)
	}
	dbs, err := milvusx.Databases(ctx, src)
	if err != nil {
		return dropped, fmt.Errorf("source: %w", err)
	}
	tgtDBs, err := milvusx.Databases(ctx, tgt)
	if err != nil {
		return dropped, fmt.Errorf("target: %w", err)
	}
	for _, db := range dbs {
		if db == milvusx.DefaultDatabase || !slices.Contains(tgtDBs, db) {
			continue
		}
		left, err := milvusx.CollectionsIn(ctx, tgt, db)
		if err != nil {
			return dropped, fmt.Errorf("target: %w", err)
		}
		if len(left) > 0 {
			continue
		}
		if err := milvusx.CheckStatus(t.DropDatabase(ctx, &milvuspb.DropDatabaseRequest{DbName: db})); err != nil {
			return dropped, fmt.Errorf("drop database %s on target: %w", db, err)
		}
	}
	return dropped, nil
}

func dropCollection(ctx context.Context, t milvuspb.MilvusServiceClient, db, name string) error {
	d, err := t.DescribeCollection(ctx, &milvuspb.DescribeCollectionRequest{DbName: db, CollectionName: name})
	if err := milvusx.Check(d, err); err != nil {
		return fmt.Errorf("describe %s.%s on target: %w", db, name, err)
	}
	for _, a := range d.GetAliases() {
		if err := milvusx.CheckStatus(t.DropAlias(ctx, &milvuspb.DropAliasRequest{DbName: db, Alias: a})); err != nil {
			return fmt.Errorf("drop alias %s on target: %w", a, err)
		}
	}
	if err := milvusx.CheckStatus(t.DropCollection(ctx, &milvuspb.DropCollectionRequest{DbName: db, CollectionName: name})); err != nil {
		return fmt.Errorf("drop %s.%s on target: %w", db, name, err)
	}
	return nil
}

// PurgeUnits removes a migration's units still on the work queue.
func PurgeUnits(ctx context.Context, js jetstream.JetStream, migration string) error {
	s, err := js.Stream(ctx, natsbus.WorkStream)
	if err != nil {
		return fmt.Errorf("work stream: %w", err)
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(natsbus.WorkSubject(migration))); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("purge units of %s: %w", migration, err)
	}
	return nil
}
