package verify

import (
	"context"
	"fmt"
	"slices"

	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"

	"github.com/zdm-io/zdm/pkg/milvusx"
)

// Defaults.
const (
	DefaultRangeRows = 10000
	pageRows         = 4096
	maxSampleKeys    = 10
)

// Report is the comparison of one collection.
type Report struct {
	Database, Collection           string
	SourceCount, TargetCount       int64
	SourceDistinct, TargetDistinct int64
	// Mismatches are the key ranges whose rows differ.
	Mismatches []Mismatch
}

// Mismatch is one primary-key range [Start, End) that differs, with up to
// ten keys that are missing, extra or different on the target.
type Mismatch struct {
	Start, End string // "" for an open bound
	SampleKeys []string
	// Partition is the partition compared ("" for the whole collection).
	Partition string
	// Range is the same range, for Repair.
	Range milvusx.Range
	// Keys are every key that differs, smallest first.
	Keys []milvusx.Key
}

// Match reports whether the two sides hold the same rows.
func (r *Report) Match() bool {
	return r.SourceCount == r.TargetCount && r.SourceDistinct == r.TargetDistinct &&
		r.SourceCount == r.SourceDistinct && len(r.Mismatches) == 0
}

func (r *Report) String() string {
	s := fmt.Sprintf("%s.%s: count %d/%d, distinct keys %d/%d, %d mismatched ranges",
		r.Database, r.Collection, r.SourceCount, r.TargetCount, r.SourceDistinct, r.TargetDistinct, len(r.Mismatches))
	for _, m := range r.Mismatches {
		s += fmt.Sprintf("; [%s, %s) keys %v", m.Start, m.End, m.SampleKeys)
	}
	return s
}

// Collection compares table t on src and tgt: count(*), distinct primary
// keys and, per range of rangeRows source keys, a digest of every whole
// row. Ranges are cut on the source; the first and last are open, so rows
// the target has outside the source's keys are found too. Memory is
// bounded by rangeRows digests per side.
func Collection(ctx context.Context, src, tgt milvuspb.MilvusServiceClient, t milvusx.Table, rangeRows int) (*Report, error) {
	return CollectionExcept(ctx, src, tgt, t, rangeRows, nil)
}

// CollectionExcept is Collection with the rows of the keys in except left
// out on both sides (keys written to the target alone after a
// switchover). With keys left out, the counts are those of the rows read
// (duplicates included) rather than count(*).
func CollectionExcept(ctx context.Context, src, tgt milvuspb.MilvusServiceClient, t milvusx.Table, rangeRows int,
	except map[milvusx.Key]bool) (*Report, error) {
	if rangeRows <= 0 {
		rangeRows = DefaultRangeRows
	}
	r := &Report{Database: t.Database, Collection: t.Collection}
	// Each side reads at a timestamp of its own, taken now.
	st, tt := t, t
	var err error
	if st.ReadTs, err = milvusx.ReadTimestamp(ctx, src); err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	if tt.ReadTs, err = milvusx.ReadTimestamp(ctx, tgt); err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	if r.SourceCount, err = Count(ctx, src, st); err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	if r.TargetCount, err = Count(ctx, tgt, tt); err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	parts := []string{t.Partition}
	if t.Partition == "" {
		if parts, err = milvusx.PagedPartitions(ctx, src, t.Database, t.Collection, t.Schema); err != nil {
			return nil, fmt.Errorf("source: %w", err)
		}
	}
	var read [2]int64
	for _, p := range parts {
		st.Partition, tt.Partition = p, p
		if err := compareTable(ctx, src, tgt, st, tt, rangeRows, except, r, &read); err != nil {
			return nil, err
		}
	}
	if len(except) > 0 {
		r.SourceCount, r.TargetCount = read[0], read[1]
	}
	return r, nil
}

// compareTable compares one table (a collection or one of its partitions)
// range by range, adding to r; st and tt are the table as each side reads
// it.
func compareTable(ctx context.Context, src, tgt milvuspb.MilvusServiceClient, st, tt milvusx.Table, rangeRows int,
	except map[milvusx.Key]bool, r *Report, read *[2]int64) error {
	var start *milvusx.Key
	for {
		// Read the next rangeRows source rows; the range ends where the
		// following row begins, or is open at the end.
		srcRows, next, n, err := digests(ctx, src, st, milvusx.Range{Start: start}, rangeRows, except)
		if err != nil {
			return fmt.Errorf("source: %w", err)
		}
		rng := milvusx.Range{Start: start, End: next}
		tgtRows, _, tn, err := digests(ctx, tgt, tt, rng, 0, except)
		if err != nil {
			return fmt.Errorf("target: %w", err)
		}
		read[0], read[1] = read[0]+n, read[1]+tn
		r.SourceDistinct += int64(len(srcRows))
		r.TargetDistinct += int64(len(tgtRows))
		if m, ok := compare(rng, srcRows, tgtRows); !ok {
			m.Partition, m.Range = st.Partition, rng
			r.Mismatches = append(r.Mismatches, m)
		}
		if next == nil {
			return nil
		}
		start = next
	}
}

type digest = [32]byte

// digests reads the rows of rng but those of the keys in except, at most
// limit of them (0: all), and returns their digests by key, the first key
// past the last one returned (nil when the range is exhausted) and the
// rows read. Pages come back complete but not sorted, so each page is
// sorted before the limit is applied.
func digests(ctx context.Context, c milvuspb.MilvusServiceClient, t milvusx.Table, rng milvusx.Range, limit int,
	except map[milvusx.Key]bool) (map[milvusx.Key]digest, *milvusx.Key, int64, error) {
	out := map[milvusx.Key]digest{}
	var after *milvusx.Key
	var n int64
	for {
		page, err := milvusx.QueryPage(ctx, c, t, rng, after, pageRows)
		if err != nil {
			return nil, nil, 0, err
		}
		type row struct {
			k milvusx.Key
			d digest
		}
		rows := make([]row, 0, len(page.Keys))
		for i, k := range page.Keys {
			if except[k] {
				continue
			}
			d, err := RowDigest(page.Fields, i)
			if err != nil {
				return nil, nil, 0, fmt.Errorf("row %s: %w", k, err)
			}
			rows = append(rows, row{k, d})
		}
		slices.SortFunc(rows, func(a, b row) int { return milvusx.CompareKeys(a.k, b.k) })
		for _, r := range rows {
			if limit > 0 && len(out) == limit {
				next := r.k
				return out, &next, n, nil
			}
			out[r.k] = r.d
			n++
		}
		if !page.More {
			return out, nil, n, nil
		}
		if limit > 0 && len(out) == limit {
			// The range may end exactly here: find the next key, if any.
			next, err := milvusx.QueryKeys(ctx, c, t, rng, &page.Last, 1)
			if err != nil {
				return nil, nil, 0, err
			}
			if len(next.Keys) == 0 {
				return out, nil, n, nil
			}
			return out, &next.Keys[0], n, nil
		}
		last := page.Last
		after = &last
	}
}

func compare(rng milvusx.Range, src, tgt map[milvusx.Key]digest) (Mismatch, bool) {
	var diff []milvusx.Key
	add := func(k milvusx.Key) { diff = append(diff, k) }
	for k, d := range src {
		if td, ok := tgt[k]; !ok || td != d {
			add(k)
		}
	}
	for k := range tgt {
		if _, ok := src[k]; !ok {
			add(k)
		}
	}
	if len(diff) == 0 {
		return Mismatch{}, true
	}
	// The smallest keys first, so reports are stable.
	slices.SortFunc(diff, milvusx.CompareKeys)
	m := Mismatch{Keys: diff}
	for _, k := range diff[:min(len(diff), maxSampleKeys)] {
		m.SampleKeys = append(m.SampleKeys, k.String())
	}
	if rng.Start != nil {
		m.Start = rng.Start.String()
	}
	if rng.End != nil {
		m.End = rng.End.String()
	}
	return m, false
}

// Count returns count(*) of the table, read at t.ReadTs (or with Strong
// consistency).
func Count(ctx context.Context, c milvuspb.MilvusServiceClient, t milvusx.Table) (int64, error) {
	req := &milvuspb.QueryRequest{DbName: t.Database, CollectionName: t.Collection, OutputFields: []string{"count(*)"}}
	t.Consistency(req)
	if t.Partition != "" {
		req.PartitionNames = []string{t.Partition}
	}
	resp, err := c.Query(ctx, req)
	if err := milvusx.Check(resp, err); err != nil {
		return 0, fmt.Errorf("count(*) of %s.%s: %w", t.Database, t.Collection, err)
	}
	for _, f := range resp.GetFieldsData() {
		if d := f.GetScalars().GetLongData().GetData(); len(d) == 1 {
			return d[0], nil
		}
	}
	return 0, fmt.Errorf("count(*) of %s.%s: no count in the reply", t.Database, t.Collection)
}
