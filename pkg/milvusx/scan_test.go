package milvusx_test

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/stretchr/testify/require"

	"github.com/zdm-io/zdm/pkg/milvusx"
	"github.com/zdm-io/zdm/pkg/ztest"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// heldTwice are the keys TestIntegrationScanReadsEveryKey inserts a
// second time: in the first page, across page and range borders, and the
// last key.
var heldTwice = []int64{10, 4500, 5000, 9999, 10001, 15000, 19999, 50000, 99999}

// TestIntegrationScanReadsEveryKey pages through ranges of 10,000, 20,000
// and 100,000 keys (20,000 on the slower milvus-lite tiers), on every
// tier, of a collection where some keys are
// held twice. On Milvus 2.3.5 such a collection makes a limited query
// return fewer keys than its limit while more follow (one fewer per key
// held twice before the cut), which a reader that takes a short page for
// the end of the range stops at: the repair then deleted every key above
// about 8,191. Every key must be read, once, with its row.
func TestIntegrationScanReadsEveryKey(t *testing.T) {
	ztest.Integration(t)
	for _, tier := range ztest.Tiers(t) {
		t.Run(tier.Name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			p := ztest.NewPair(t, tier)
			name := p.Name("scan")
			ztest.KeyedCollection(t, ctx, p.Source.Client, name)
			size := int64(100000)
			if tier.Name != "milvus" {
				size = 20000
			}
			ztest.InsertKeys(t, ctx, p.Source.Client, name, ztest.Keys(0, size), 0)
			require.NoError(t, p.Source.Client.Flush(ctx, name, false))
			var twice []int64
			for _, k := range heldTwice {
				if k < size {
					twice = append(twice, k)
				}
			}
			ztest.InsertKeys(t, ctx, p.Source.Client, name, twice, 1)

			c, err := milvusx.Open(ctx, &zdmpb.ClusterConnection{Endpoint: tier.Source}, "")
			require.NoError(t, err)
			defer c.Close()
			table, err := milvusx.DescribeTable(ctx, c.Raw, p.Source.Database, name)
			require.NoError(t, err)
			table.ReadTs, err = milvusx.ReadTimestamp(ctx, c.Raw)
			require.NoError(t, err)
			table.Exact = true
			rows, err := milvusx.CountRows(ctx, c.Raw, table, "")
			require.NoError(t, err)
			// milvus-lite keeps one row per key; standalone Milvus keeps both.
			keepsBoth := rows == size+int64(len(twice))
			require.True(t, keepsBoth || rows == size, "count(*) %d", rows)
			if tier.Name == "milvus" {
				require.True(t, keepsBoth, "Milvus %s keeps both rows of a key inserted twice", tier.Version)
			}
			t.Logf("%s: count(*) %d; a query of id >= 4000 limited to 4096 keys returns %d", tier.Name, rows, limited(t, ctx, c.Raw, table, "id >= 4000", 4096))

			for _, tc := range []struct {
				r        milvusx.Range
				from, to int64
			}{
				{milvusx.Range{Start: key(0), End: key(10000)}, 0, 10000},
				{milvusx.Range{Start: key(0), End: key(20000)}, 0, 20000},
				{milvusx.Range{}, 0, size},
			} {
				var dups []int64
				for _, k := range twice {
					if keepsBoth && k >= tc.from && k < tc.to {
						dups = append(dups, k)
					}
				}
				loose := table
				loose.Exact = false
				start := time.Now()
				keys, _, pages := readKeys(t, ctx, c.Raw, loose, tc.r)
				require.Equal(t, ztest.Keys(tc.from, tc.to), keys, "every key of [%d, %d), once, in order, unproven", tc.from, tc.to)
				t.Logf("[%d, %d): %d keys in %d pages in %s, unproven", tc.from, tc.to, len(keys), pages, time.Since(start).Round(time.Millisecond))

				start = time.Now()
				keys, gotDups, pages := readKeys(t, ctx, c.Raw, table, tc.r)
				require.Equal(t, ztest.Keys(tc.from, tc.to), keys, "every key of [%d, %d), once, in order", tc.from, tc.to)
				require.Equal(t, dups, gotDups, "the keys held twice")
				t.Logf("[%d, %d): %d keys in %d pages in %s", tc.from, tc.to, len(keys), pages, time.Since(start).Round(time.Millisecond))

				start = time.Now()
				keys = readRows(t, ctx, c.Raw, table, tc.r)
				require.Equal(t, ztest.Keys(tc.from, tc.to), keys, "one row for every key of [%d, %d)", tc.from, tc.to)
				t.Logf("[%d, %d): %d rows in %s", tc.from, tc.to, len(keys), time.Since(start).Round(time.Millisecond))
			}
		})
	}
}

func key(k int64) *milvusx.Key { return &milvusx.Key{Int: k} }

// readKeys pages through r with QueryKeys and returns the keys, the keys
// held twice and the number of pages.
func readKeys(t *testing.T, ctx context.Context, c milvuspb.MilvusServiceClient, table milvusx.Table, r milvusx.Range) (keys, dups []int64, pages int) {
	t.Helper()
	var after *milvusx.Key
	for {
		p, err := milvusx.QueryKeys(ctx, c, table, r, after, 4096)
		require.NoError(t, err)
		pages++
		require.True(t, slices.IsSortedFunc(p.Keys, milvusx.CompareKeys))
		for _, k := range p.Keys {
			keys = append(keys, k.Int)
		}
		for _, k := range p.Duplicates {
			dups = append(dups, k.Int)
			require.Equal(t, int64(2), p.Held[k], "rows of key %d", k.Int)
		}
		if !p.More {
			return keys, dups, pages
		}
		require.Equal(t, p.Keys[len(p.Keys)-1], p.Last)
		after = &p.Last
	}
}

// readRows pages through r with QueryPage and returns the key of every
// row read, in order.
func readRows(t *testing.T, ctx context.Context, c milvuspb.MilvusServiceClient, table milvusx.Table, r milvusx.Range) []int64 {
	t.Helper()
	var keys []int64
	var after *milvusx.Key
	for {
		p, err := milvusx.QueryPage(ctx, c, table, r, after, 4096)
		require.NoError(t, err)
		got, err := milvusx.PKValues(p.Fields, table.PK)
		require.NoError(t, err)
		require.Equal(t, p.Keys, got, "the page's rows are its keys")
		var page []int64
		for _, k := range got {
			page = append(page, k.Int)
		}
		slices.Sort(page)
		keys = append(keys, page...)
		if !p.More {
			return keys
		}
		after = &p.Last
	}
}

// limited returns how many keys a query of expr with limit returns.
func limited(t *testing.T, ctx context.Context, c milvuspb.MilvusServiceClient, table milvusx.Table, expr string, limit int) int {
	t.Helper()
	req := &milvuspb.QueryRequest{DbName: table.Database, CollectionName: table.Collection, Expr: expr, OutputFields: []string{"id"},
		QueryParams: []*commonpb.KeyValuePair{{Key: "limit", Value: strconv.Itoa(limit)}}}
	table.Consistency(req)
	resp, err := c.Query(ctx, req)
	require.NoError(t, milvusx.Check(resp, err))
	keys, err := milvusx.PKValues(resp.GetFieldsData(), table.PK)
	require.NoError(t, err)
	return len(keys)
}
