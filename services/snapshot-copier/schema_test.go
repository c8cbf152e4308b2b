package copier

import (
	"context"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"github.com/milvus-io/milvus-sdk-go/v2/client"
	"github.com/milvus-io/milvus-sdk-go/v2/entity"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/zdm-io/zdm/pkg/milvusx"
	"github.com/zdm-io/zdm/pkg/ztest"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// sides returns a source and a target with nothing else on them: the
// tier's own servers with a fresh database each where the tier has
// databases, fresh servers where it has not.
func sides(t *testing.T, tier ztest.Tier) (src, tgt client.Client, scope []string) {
	t.Helper()
	if tier.Name == "milvus" {
		p := ztest.NewPair(t, tier)
		return p.Source.Client, p.Target.Client, []string{p.Source.Database}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	connect := func() client.Client {
		c, err := milvusx.Connect(ctx, &zdmpb.ClusterConnection{Endpoint: ztest.NewServer(t, tier.Name)}, "")
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}
	return connect(), connect(), nil
}

// seed makes collections that exercise what PrepareTarget must carry over.
func seed(t *testing.T, ctx context.Context, c client.Client) {
	t.Helper()
	items := entity.NewSchema().WithName("items").WithDescription("catalogue items").WithDynamicFieldEnabled(true).
		WithField(entity.NewField().WithName("id").WithDataType(entity.FieldTypeInt64).WithIsPrimaryKey(true).WithDescription("item id")).
		WithField(entity.NewField().WithName("title").WithDataType(entity.FieldTypeVarChar).WithMaxLength(200)).
		WithField(entity.NewField().WithName("attrs").WithDataType(entity.FieldTypeJSON)).
		WithField(entity.NewField().WithName("price").WithDataType(entity.FieldTypeDouble)).
		WithField(entity.NewField().WithName("vec").WithDataType(entity.FieldTypeFloatVector).WithDim(8))
	require.NoError(t, c.CreateCollection(ctx, items, 2, client.WithConsistencyLevel(entity.ClBounded)))
	// milvus-lite 2.5 has no partitions.
	for _, p := range []string{"spring", "autumn"} {
		if err := c.CreatePartition(ctx, "items", p); !milvusx.IsUnimplemented(err) {
			require.NoError(t, err)
		}
	}
	idx, err := entity.NewIndexIvfFlat(entity.L2, 16)
	require.NoError(t, err)
	// Asynchronous: with a custom index name, the SDK's wait for the index
	// never ends on milvus-lite 3.
	require.NoError(t, c.CreateIndex(ctx, "items", "vec", idx, true, client.WithIndexName("vec_ivf")))
	// milvus-lite 2.5 has no aliases.
	if err := c.CreateAlias(ctx, "items", "catalogue"); !milvusx.IsUnimplemented(err) {
		require.NoError(t, err)
	}
	// Asynchronous: milvus-lite 3 never reports loading progress, which a
	// synchronous load waits for.
	require.NoError(t, c.LoadCollection(ctx, "items", true))

	events := entity.NewSchema().WithName("events").WithAutoID(true).
		WithField(entity.NewField().WithName("pk").WithDataType(entity.FieldTypeInt64).WithIsPrimaryKey(true).WithIsAutoID(true)).
		WithField(entity.NewField().WithName("tenant").WithDataType(entity.FieldTypeVarChar).WithMaxLength(64).WithIsPartitionKey(true)).
		WithField(entity.NewField().WithName("emb").WithDataType(entity.FieldTypeFloatVector).WithDim(4))
	require.NoError(t, c.CreateCollection(ctx, events, 1, client.WithPartitionNum(4)))
}

// normalized is a collection as PrepareTarget must reproduce it, without
// what each server assigns itself.
type normalized struct {
	Schema      *schemapb.CollectionSchema
	Shards      int32
	Consistency commonpb.ConsistencyLevel
	Properties  map[string]string
	Aliases     []string
	Partitions  []string
	Indexes     map[string]string
	Loaded      bool
}

func describe(t *testing.T, ctx context.Context, c client.Client, db, name string) normalized {
	t.Helper()
	raw, err := milvusx.Raw(c)
	require.NoError(t, err)
	d, err := raw.DescribeCollection(ctx, &milvuspb.DescribeCollectionRequest{DbName: db, CollectionName: name})
	require.NoError(t, milvusx.Check(d, err))
	s := proto.Clone(d.GetSchema()).(*schemapb.CollectionSchema)
	for _, f := range s.GetFields() {
		f.FieldID = 0
	}
	n := normalized{Schema: s, Shards: d.GetShardsNum(), Consistency: d.GetConsistencyLevel(), Properties: map[string]string{}, Indexes: map[string]string{}}
	for _, kv := range d.GetProperties() {
		n.Properties[kv.GetKey()] = kv.GetValue()
	}
	n.Aliases = slices.Sorted(slices.Values(d.GetAliases()))
	parts, err := milvusx.Partitions(ctx, raw, db, name)
	require.NoError(t, err)
	n.Partitions = slices.Sorted(slices.Values(parts))
	idx, err := describeIndexes(ctx, raw, db, name)
	require.NoError(t, err)
	for _, i := range idx {
		var params []string
		for _, kv := range i.GetParams() {
			params = append(params, kv.GetKey()+"="+kv.GetValue())
		}
		sort.Strings(params)
		n.Indexes[i.GetIndexName()] = i.GetFieldName() + " " + strings.Join(params, ",")
	}
	st, err := raw.GetLoadState(ctx, &milvuspb.GetLoadStateRequest{DbName: db, CollectionName: name})
	require.NoError(t, milvusx.Check(st, err))
	n.Loaded = st.GetState() == commonpb.LoadState_LoadStateLoaded || st.GetState() == commonpb.LoadState_LoadStateLoading
	return n
}

// TestIntegrationPrepareTarget replicates a source's schema objects on
// every tier and compares both sides; a second run changes nothing.
func TestIntegrationPrepareTarget(t *testing.T) {
	ztest.Integration(t)
	for _, tier := range ztest.Tiers(t) {
		t.Run(tier.Name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			src, tgt, scope := sides(t, tier)
			seed(t, ctx, src)

			report, err := PrepareTarget(ctx, src, tgt, PrepareOptions{Databases: scope})
			require.NoError(t, err)
			db := milvusx.DefaultDatabase
			if scope != nil {
				db = scope[0]
			}
			require.ElementsMatch(t, []string{db + ".items", db + ".events"}, report.Collections)
			require.Equal(t, []string{db + ".events"}, report.AutoIDDisabled)

			for _, name := range []string{"items", "events"} {
				want, got := describe(t, ctx, src, db, name), describe(t, ctx, tgt, db, name)
				if name == "events" {
					// Documented difference: older targets take the
					// source's keys only without auto-ID.
					for _, f := range want.Schema.GetFields() {
						f.AutoID = false
					}
					//lint:ignore SA1019 older servers still report the schema-level flag.
					want.Schema.AutoID = false
				}
				if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
					t.Errorf("%s differs (-source, +target):\n%s", name, diff)
				}
			}

			again, err := PrepareTarget(ctx, src, tgt, PrepareOptions{Databases: scope})
			require.NoError(t, err, "a re-run after a crash must not fail")
			require.Zero(t, again.Created, "a re-run creates nothing")
		})
	}
}
