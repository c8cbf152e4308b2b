package verify

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"golang.org/x/sync/errgroup"

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
	// SourceDuplicates are the keys the source holds more than one row
	// for (count(*) counts each of them), smallest first; at most
	// maxSampleKeys are kept, SourceDuplicateKeys counts them all. They
	// are a finding, not a difference: a query returns one row of such a
	// key, the target holds one, and nothing repairs them.
	SourceDuplicates    []string
	SourceDuplicateKeys int64
	// SourceExtraRows are the source's rows beyond one for each of those
	// keys.
	SourceExtraRows int64
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

// Match reports whether the target holds the source's keys, each once,
// with the same rows. Keys the source holds twice do not make a
// difference (see SourceDuplicates); a key the target holds twice does.
func (r *Report) Match() bool {
	return r.SourceDistinct == r.TargetDistinct && r.TargetCount == r.TargetDistinct && len(r.Mismatches) == 0
}

func (r *Report) String() string {
	s := fmt.Sprintf("%s.%s: count %d/%d, distinct keys %d/%d, %d mismatched ranges",
		r.Database, r.Collection, r.SourceCount, r.TargetCount, r.SourceDistinct, r.TargetDistinct, len(r.Mismatches))
	if r.SourceDuplicateKeys > 0 {
		s += fmt.Sprintf(", %d keys held twice on the source (e.g. %s)", r.SourceDuplicateKeys, strings.Join(r.SourceDuplicates, ", "))
	}
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
	// Each side reads at a timestamp of its own, taken now. Both are
	// quiet, but for a target clients write to after a switchover (its
	// keys written since are left out, in except).
	st, tt := t, t
	st.Exact, tt.Exact = true, except == nil
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
		srcSide, next, err := digests(ctx, src, st, milvusx.Range{Start: start}, rangeRows, except)
		if err != nil {
			return fmt.Errorf("source: %w", err)
		}
		rng := milvusx.Range{Start: start, End: next}
		tgtSide, _, err := digests(ctx, tgt, tt, rng, 0, except)
		if err != nil {
			return fmt.Errorf("target: %w", err)
		}
		read[0], read[1] = read[0]+srcSide.rows, read[1]+tgtSide.rows
		r.SourceDistinct += int64(len(srcSide.digests))
		r.TargetDistinct += int64(len(tgtSide.digests))
		for _, k := range srcSide.dups {
			if len(r.SourceDuplicates) < maxSampleKeys {
				r.SourceDuplicates = append(r.SourceDuplicates, k.String())
			}
			r.SourceDuplicateKeys++
		}
		r.SourceExtraRows += srcSide.extra
		if m, ok := compare(rng, srcSide, tgtSide); !ok {
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

// side is what one side holds in a range: a digest of the row a query
// returns for each key, the keys it holds more than once, and the rows
// read.
type side struct {
	digests map[milvusx.Key]digest
	dups    []milvusx.Key
	extra   int64 // rows beyond one of the keys in dups
	rows    int64
}

// digests reads the rows of rng but those of the keys in except, at most
// limit of them (0: all), and returns their digests by key and the first
// key past the last one returned (nil when the range is exhausted). Every
// page is read whole (see milvusx.QueryPage), so a range is read to its
// true end or not at all. Pages come back complete but not sorted, so
// each page is sorted before the limit is applied.
func digests(ctx context.Context, c milvuspb.MilvusServiceClient, t milvusx.Table, rng milvusx.Range, limit int,
	except map[milvusx.Key]bool) (side, *milvusx.Key, error) {
	out := side{digests: map[milvusx.Key]digest{}}
	var after *milvusx.Key
	for {
		page, err := milvusx.QueryPage(ctx, c, t, rng, after, pageRows)
		if err != nil {
			return side{}, nil, err
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
				return side{}, nil, fmt.Errorf("row %s: %w", k, err)
			}
			rows = append(rows, row{k, d})
		}
		slices.SortFunc(rows, func(a, b row) int { return milvusx.CompareKeys(a.k, b.k) })
		dups := map[milvusx.Key]bool{}
		for _, k := range page.Duplicates {
			dups[k] = true
		}
		for _, r := range rows {
			if limit > 0 && len(out.digests) == limit {
				next := r.k
				return out, &next, nil
			}
			out.digests[r.k] = r.d
			out.rows++
			if dups[r.k] {
				out.dups = append(out.dups, r.k)
				out.extra += page.Held[r.k] - 1
			}
		}
		if !page.More {
			return out, nil, nil
		}
		if limit > 0 && len(out.digests) == limit {
			// The range may end exactly here: find the next key, if any.
			next, err := milvusx.QueryKeys(ctx, c, t, rng, &page.Last, 1)
			if err != nil {
				return side{}, nil, err
			}
			if len(next.Keys) == 0 {
				return out, nil, nil
			}
			return out, &next.Keys[0], nil
		}
		last := page.Last
		after = &last
	}
}

// compare lists the keys that differ between the two sides of rng: a key
// one side lacks, a key the target holds twice, and a key whose rows
// differ, unless the source holds it twice (a query may return either of
// its rows, so only its presence is compared).
func compare(rng milvusx.Range, src, tgt side) (Mismatch, bool) {
	var diff []milvusx.Key
	srcDup := map[milvusx.Key]bool{}
	for _, k := range src.dups {
		srcDup[k] = true
	}
	for k, d := range src.digests {
		if td, ok := tgt.digests[k]; !ok || (td != d && !srcDup[k]) {
			diff = append(diff, k)
		}
	}
	for k := range tgt.digests {
		if _, ok := src.digests[k]; !ok {
			diff = append(diff, k)
		}
	}
	for _, k := range tgt.dups {
		if !slices.Contains(diff, k) {
			diff = append(diff, k)
		}
	}
	if len(diff) == 0 {
		return Mismatch{}, true
	}
	// The smallest keys first, so reports are stable.
	slices.SortFunc(diff, milvusx.CompareKeys)
	m := Mismatch{Keys: diff, SampleKeys: sample(diff)}
	if rng.Start != nil {
		m.Start = rng.Start.String()
	}
	if rng.End != nil {
		m.End = rng.End.String()
	}
	return m, false
}

// sample returns the first maxSampleKeys keys as text.
func sample(keys []milvusx.Key) []string {
	var out []string
	for _, k := range keys[:min(len(keys), maxSampleKeys)] {
		out = append(out, k.String())
	}
	return out
}

// Count returns count(*) of the table, read at t.ReadTs (or with Strong
// consistency).
func Count(ctx context.Context, c milvuspb.MilvusServiceClient, t milvusx.Table) (int64, error) {
	return milvusx.CountRows(ctx, c, t, "")
}

// heldTwiceTries is how often HeldTwice reads a page that writes keep
// from being proven.
const heldTwiceTries = 10

// HeldTwice returns the keys of table t that c holds more than one row
// for, smallest first, reading every key with each page proven (see
// milvusx.QueryKeys and Table.Exact); t.ReadTs is used as it is. While
// writes go on, a page read heldTwiceTries times without its counts
// reconciled is an error wrapping milvusx.ErrIncompleteRead.
func HeldTwice(ctx context.Context, c milvuspb.MilvusServiceClient, t milvusx.Table) ([]milvusx.Key, error) {
	t.Exact = true
	var out []milvusx.Key
	var after *milvusx.Key
	for {
		p, err := milvusx.QueryKeys(ctx, c, t, milvusx.Range{}, after, milvusx.MaxQueryRows-1)
		// A write can land between the queries of a page: read it again,
		// a page at a time, rather than the whole table.
		for try := 1; errors.Is(err, milvusx.ErrIncompleteRead) && try < heldTwiceTries; try++ {
			p, err = milvusx.QueryKeys(ctx, c, t, milvusx.Range{}, after, milvusx.MaxQueryRows-1)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, p.Duplicates...)
		if !p.More {
			return out, nil
		}
		after = &p.Last
	}
}

// ExtraRows returns the rows c holds beyond one for each of keys (keys
// held twice, see HeldTwice), counting each key at t.ReadTs, eight at a
// time: a key held once or no longer held adds nothing.
func ExtraRows(ctx context.Context, c milvuspb.MilvusServiceClient, t milvusx.Table, keys []milvusx.Key) (int64, error) {
	var extra atomic.Int64
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, k := range keys {
		g.Go(func() error {
			n, err := milvusx.CountRows(ctx, c, t, milvusx.InFilter(t.PK.GetName(), []milvusx.Key{k}))
			extra.Add(max(n-1, 0))
			return err
		})
	}
	err := g.Wait()
	return extra.Load(), err
}
