package copier

import (
	"context"
	"fmt"
	"log/slog"
	"slices"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"github.com/milvus-io/milvus-sdk-go/v2/client"
	"google.golang.org/protobuf/proto"

	"github.com/zdm-io/zdm/pkg/milvusx"
)

// PrepareOptions scope and tune PrepareTarget.
type PrepareOptions struct {
	// Databases limits the work to these source databases; empty means
	// every database of the source.
	Databases []string
	// ExplicitAutoID is true when the target accepts explicit primary keys
	// for auto-ID collections (Milvus 2.6.3 and later, with the collection
	// property allow_insert_auto_id). When false, such collections are
	// created on the target without auto-ID, so the copy can write the
	// source's keys; see docs/operations.md.
	ExplicitAutoID bool
	// DeferLoad leaves the target's collections released: inserts into a
	// loaded collection cost the target about half as much CPU again (its
	// query node takes in every row), so a migration copies into released
	// collections and loads those the source has loaded once the copy is
	// over (milvusx.LoadLikeSource).
	DeferLoad bool
	Logger    *slog.Logger
}

// PrepareReport says what PrepareTarget did.
type PrepareReport struct {
	// Collections prepared, as "database.collection".
	Collections []string
	// Created counts objects created now; a re-run after a crash creates
	// only what is missing.
	Created int
	// AutoIDDisabled lists collections created without auto-ID on the
	// target (see PrepareOptions.ExplicitAutoID).
	AutoIDDisabled []string
}

// allowInsertAutoID is the collection property that lets Milvus 2.6.3+
// accept explicit keys in an auto-ID collection.
const allowInsertAutoID = "allow_insert_auto_id"

// PrepareTarget replicates the source's schema objects to the target:
// databases, collections with their full schema, partitions, indexes and
// aliases, then loads on the target what is loaded on the source. It is
// idempotent: objects that exist on the target are left alone, so a re-run
// after a crash neither fails nor duplicates anything.
func PrepareTarget(ctx context.Context, src, tgt client.Client, opts PrepareOptions) (*PrepareReport, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := milvusx.Raw(src)
	if err != nil {
		return nil, err
	}
	t, err := milvusx.Raw(tgt)
	if err != nil {
		return nil, err
	}
	p := &preparer{src: s, tgt: t, opts: opts, report: &PrepareReport{}}
	dbs, err := milvusx.Databases(ctx, src)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	tgtDBs, err := milvusx.Databases(ctx, tgt)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	for _, db := range dbs {
		if len(opts.Databases) > 0 && !slices.Contains(opts.Databases, db) {
			continue
		}
		if !slices.Contains(tgtDBs, db) {
			if err := milvusx.CheckStatus(t.CreateDatabase(ctx, &milvuspb.CreateDatabaseRequest{DbName: db})); err != nil {
				return p.report, fmt.Errorf("create database %s on target: %w", db, err)
			}
			p.report.Created++
		}
		names, err := milvusx.CollectionsIn(ctx, src, db)
		if err != nil {
			return p.report, fmt.Errorf("source: %w", err)
		}
		for _, name := range names {
			if err := p.collection(ctx, db, name); err != nil {
				return p.report, fmt.Errorf("%s.%s: %w", db, name, err)
			}
			p.report.Collections = append(p.report.Collections, db+"."+name)
		}
	}
	return p.report, nil
}

type preparer struct {
	src, tgt milvuspb.MilvusServiceClient
	opts     PrepareOptions
	report   *PrepareReport
}

func (p *preparer) collection(ctx context.Context, db, name string) error {
	desc, err := p.src.DescribeCollection(ctx, &milvuspb.DescribeCollectionRequest{DbName: db, CollectionName: name})
	if err := milvusx.Check(desc, err); err != nil {
		return fmt.Errorf("describe on source: %w", err)
	}
	parts, err := milvusx.Partitions(ctx, p.src, db, name)
	if err != nil {
		return fmt.Errorf("show partitions on source: %w", err)
	}
	has, err := p.tgt.HasCollection(ctx, &milvuspb.HasCollectionRequest{DbName: db, CollectionName: name})
	if err := milvusx.Check(has, err); err != nil {
		return fmt.Errorf("has collection on target: %w", err)
	}
	if !has.GetValue() {
		if err := p.createCollection(ctx, db, name, desc, len(parts)); err != nil {
			return err
		}
	}
	if !hasPartitionKey(desc.GetSchema()) {
		if err := p.partitions(ctx, db, name, parts); err != nil {
			return err
		}
	}
	if err := p.indexes(ctx, db, name); err != nil {
		return err
	}
	if err := p.aliases(ctx, db, name, desc.GetAliases()); err != nil {
		return err
	}
	if p.opts.DeferLoad {
		return nil
	}
	return p.load(ctx, db, name)
}

// createCollection creates the collection with the source's schema,
// shards, consistency level, properties and partition count.
func (p *preparer) createCollection(ctx context.Context, db, name string, desc *milvuspb.DescribeCollectionResponse, partitions int) error {
	schema := proto.Clone(desc.GetSchema()).(*schemapb.CollectionSchema)
	schema.Name = name
	// The dynamic field ($meta) is described but created by Milvus itself
	// from enable_dynamic_field.
	schema.Fields = slices.DeleteFunc(schema.Fields, func(f *schemapb.FieldSchema) bool { return f.GetIsDynamic() })
	props := slices.Clone(desc.GetProperties())
	for _, f := range schema.GetFields() {
		f.FieldID = 0
		if !f.GetIsPrimaryKey() || !f.GetAutoID() {
			continue
		}
		if p.opts.ExplicitAutoID {
			props = append(props, &commonpb.KeyValuePair{Key: allowInsertAutoID, Value: "true"})
		} else {
			f.AutoID = false
			//lint:ignore SA1019 older servers still read the schema-level flag.
			schema.AutoID = false
			p.report.AutoIDDisabled = append(p.report.AutoIDDisabled, db+"."+name)
		}
	}
	raw, err := proto.Marshal(schema)
	if err != nil {
		return err
	}
	req := &milvuspb.CreateCollectionRequest{
		DbName: db, CollectionName: name, Schema: raw, ShardsNum: desc.GetShardsNum(),
		ConsistencyLevel: desc.GetConsistencyLevel(), Properties: props,
	}
	if hasPartitionKey(schema) {
		req.NumPartitions = desc.GetNumPartitions()
		if req.NumPartitions == 0 {
			req.NumPartitions = int64(partitions)
		}
	}
	if err := milvusx.CheckStatus(p.tgt.CreateCollection(ctx, req)); err != nil {
		return fmt.Errorf("create on target: %w", err)
	}
	p.report.Created++
	p.opts.Logger.InfoContext(ctx, "collection created on target", slog.String("database", db), slog.String("collection", name))
	return nil
}

func hasPartitionKey(s *schemapb.CollectionSchema) bool {
	return slices.ContainsFunc(s.GetFields(), func(f *schemapb.FieldSchema) bool { return f.GetIsPartitionKey() })
}

func (p *preparer) partitions(ctx context.Context, db, name string, want []string) error {
	have, err := milvusx.Partitions(ctx, p.tgt, db, name)
	if err != nil {
		return fmt.Errorf("show partitions on target: %w", err)
	}
	for _, part := range want {
		if slices.Contains(have, part) {
			continue
		}
		if err := milvusx.CheckStatus(p.tgt.CreatePartition(ctx, &milvuspb.CreatePartitionRequest{DbName: db, CollectionName: name, PartitionName: part})); err != nil {
			return fmt.Errorf("create partition %s on target: %w", part, err)
		}
		p.report.Created++
	}
	return nil
}

// indexes creates every index of the source, by name, with the same
// field, type, metric and parameters.
func (p *preparer) indexes(ctx context.Context, db, name string) error {
	src, err := describeIndexes(ctx, p.src, db, name)
	if err != nil {
		return fmt.Errorf("describe indexes on source: %w", err)
	}
	tgt, err := describeIndexes(ctx, p.tgt, db, name)
	if err != nil {
		return fmt.Errorf("describe indexes on target: %w", err)
	}
	for _, idx := range src {
		if slices.ContainsFunc(tgt, func(t *milvuspb.IndexDescription) bool { return t.GetIndexName() == idx.GetIndexName() }) {
			continue
		}
		req := &milvuspb.CreateIndexRequest{DbName: db, CollectionName: name, FieldName: idx.GetFieldName(),
			IndexName: idx.GetIndexName(), ExtraParams: idx.GetParams()}
		if err := milvusx.CheckStatus(p.tgt.CreateIndex(ctx, req)); err != nil {
			return fmt.Errorf("create index %s on target: %w", idx.GetIndexName(), err)
		}
		p.report.Created++
	}
	return nil
}

// describeIndexes lists a collection's indexes; none is not an error.
func describeIndexes(ctx context.Context, c milvuspb.MilvusServiceClient, db, name string) ([]*milvuspb.IndexDescription, error) {
	resp, err := c.DescribeIndex(ctx, &milvuspb.DescribeIndexRequest{DbName: db, CollectionName: name})
	if err != nil {
		return nil, err
	}
	s := resp.GetStatus()
	//lint:ignore SA1019 older servers set only error_code.
	legacy := s.GetErrorCode()
	if s.GetCode() == indexNotExistCode || legacy == commonpb.ErrorCode_IndexNotExist {
		return nil, nil
	}
	if err := milvusx.StatusError(resp.GetStatus()); err != nil {
		return nil, err
	}
	return resp.GetIndexDescriptions(), nil
}

// indexNotExistCode is Milvus's error code for "index not found".
const indexNotExistCode = 700

func (p *preparer) aliases(ctx context.Context, db, name string, aliases []string) error {
	tgt, err := p.tgt.DescribeCollection(ctx, &milvuspb.DescribeCollectionRequest{DbName: db, CollectionName: name})
	if err := milvusx.Check(tgt, err); err != nil {
		return fmt.Errorf("describe on target: %w", err)
	}
	for _, a := range aliases {
		if slices.Contains(tgt.GetAliases(), a) {
			continue
		}
		if err := milvusx.CheckStatus(p.tgt.CreateAlias(ctx, &milvuspb.CreateAliasRequest{DbName: db, CollectionName: name, Alias: a})); err != nil {
			return fmt.Errorf("create alias %s on target: %w", a, err)
		}
		p.report.Created++
	}
	return nil
}

// load loads the collection on the target when it is loaded (or loading)
// on the source.
func (p *preparer) load(ctx context.Context, db, name string) error {
	st, err := p.src.GetLoadState(ctx, &milvuspb.GetLoadStateRequest{DbName: db, CollectionName: name})
	if err := milvusx.Check(st, err); err != nil {
		return fmt.Errorf("load state on source: %w", err)
	}
	if st.GetState() != commonpb.LoadState_LoadStateLoaded && st.GetState() != commonpb.LoadState_LoadStateLoading {
		return nil
	}
	tst, err := p.tgt.GetLoadState(ctx, &milvuspb.GetLoadStateRequest{DbName: db, CollectionName: name})
	if err := milvusx.Check(tst, err); err != nil {
		return fmt.Errorf("load state on target: %w", err)
	}
	if tst.GetState() == commonpb.LoadState_LoadStateLoaded || tst.GetState() == commonpb.LoadState_LoadStateLoading {
		return nil
	}
	if err := milvusx.CheckStatus(p.tgt.LoadCollection(ctx, &milvuspb.LoadCollectionRequest{DbName: db, CollectionName: name})); err != nil {
		return fmt.Errorf("load on target: %w", err)
	}
	p.report.Created++
	return nil
}

// describeSchema returns a collection's schema.
func describeSchema(ctx context.Context, c milvuspb.MilvusServiceClient, db, name string) (*schemapb.CollectionSchema, error) {
	d, err := c.DescribeCollection(ctx, &milvuspb.DescribeCollectionRequest{DbName: db, CollectionName: name})
	if err := milvusx.Check(d, err); err != nil {
		return nil, fmt.Errorf("describe %s.%s: %w", db, name, err)
	}
	return d.GetSchema(), nil
}
