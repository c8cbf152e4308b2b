package verify

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"

	"github.com/zdm-io/zdm/pkg/milvusx"
)

// DefaultMaxDeleteShare is the largest share of a range's target keys a
// repair deletes; past it, it deletes nothing and fails (ErrTooManyDeletes).
const DefaultMaxDeleteShare = 0.01

// ErrTooManyDeletes is returned by Repair when it would delete more of a
// range's keys than it may.
var ErrTooManyDeletes = errors.New("repair would delete too many keys")

// deleteBatch is how many keys one delete names.
const deleteBatch = 1000

// Repaired is what Repair did to one range of the target.
type Repaired struct {
	Database, Collection, Partition string
	// Start and End bound the range as text ("" for an open bound).
	Start, End string
	// Upserted are the source rows written because the target lacked
	// their key, held another row for it, or held it twice.
	Upserted int64
	// Deleted are the target keys the source does not hold.
	Deleted int64
	// UpsertedSample and DeletedSample are up to ten of those keys,
	// smallest first.
	UpsertedSample, DeletedSample []string
}

// Repair makes the target's rows in a mismatched range equal to the
// source's, for a quiet source (writes stopped), where a second
// comparison then proves the range equal. Both sides are read whole,
// each at a timestamp of its own: the target's keys and row digests, then
// the source's rows page by page, each page proven complete (see
// milvusx.QueryPage). Source rows whose key the target lacks, holds with
// another row or holds twice are upserted; a key the source holds twice
// is written only when the target lacks it. Only once the source's whole
// range has been read are target keys it lacks deleted, and only if they
// are at most maxDeleteShare of the range's target keys: otherwise
// nothing is deleted and the error wraps ErrTooManyDeletes with the
// figures. A read that cannot be completed returns an error wrapping
// milvusx.ErrIncompleteRead before any delete.
func Repair(ctx context.Context, src, tgt milvuspb.MilvusServiceClient, t milvusx.Table, m Mismatch, maxDeleteShare float64) (Repaired, error) {
	t.Partition = m.Partition
	out := Repaired{Database: t.Database, Collection: t.Collection, Partition: m.Partition, Start: m.Start, End: m.End}
	st, tt := t, t
	st.Exact, tt.Exact = true, true
	var err error
	if st.ReadTs, err = milvusx.ReadTimestamp(ctx, src); err != nil {
		return out, fmt.Errorf("source: %w", err)
	}
	if tt.ReadTs, err = milvusx.ReadTimestamp(ctx, tgt); err != nil {
		return out, fmt.Errorf("target: %w", err)
	}
	held, _, err := digests(ctx, tgt, tt, m.Range, 0, nil)
	if err != nil {
		return out, fmt.Errorf("target: %w", err)
	}
	twice := map[milvusx.Key]bool{}
	for _, k := range held.dups {
		twice[k] = true
	}
	seen := map[milvusx.Key]bool{}
	var upserted []milvusx.Key
	var after *milvusx.Key
	for {
		page, err := milvusx.QueryPage(ctx, src, st, m.Range, after, pageRows)
		if err != nil {
			return out, fmt.Errorf("source: %w", err)
		}
		srcTwice := map[milvusx.Key]bool{}
		for _, k := range page.Duplicates {
			srcTwice[k] = true
		}
		var rows milvusx.Rows
		for i, k := range page.Keys {
			seen[k] = true
			d, err := RowDigest(page.Fields, i)
			if err != nil {
				return out, fmt.Errorf("source row %s: %w", k, err)
			}
			td, ok := held.digests[k]
			if ok && !twice[k] && (td == d || srcTwice[k]) {
				continue
			}
			if err := rows.Add(page.Fields, i, len(page.Keys)); err != nil {
				return out, fmt.Errorf("source row %s: %w", k, err)
			}
			upserted = append(upserted, k)
		}
		if rows.Len() > 0 {
			resp, err := tgt.Upsert(ctx, &milvuspb.UpsertRequest{DbName: t.Database, CollectionName: t.Collection,
				PartitionName: t.Partition, FieldsData: rows.Fields(), NumRows: uint32(rows.Len())})
			if err := milvusx.Check(resp, err); err != nil {
				return out, fmt.Errorf("target: upsert into %s.%s: %w", t.Database, t.Collection, err)
			}
			out.Upserted += int64(rows.Len())
		}
		if !page.More {
			break
		}
		last := page.Last
		after = &last
	}
	out.UpsertedSample = sample(upserted)
	var extra []milvusx.Key
	for k := range held.digests {
		if !seen[k] {
			extra = append(extra, k)
		}
	}
	if len(extra) == 0 {
		return out, nil
	}
	slices.SortFunc(extra, milvusx.CompareKeys)
	if float64(len(extra)) > maxDeleteShare*float64(len(held.digests)) {
		return out, fmt.Errorf("%w: %s.%s keys [%s, %s): the source lacks %d of the target's %d keys there (more than %g%%), e.g. %v; "+
			"nothing was deleted (%d source rows were written)", ErrTooManyDeletes, t.Database, t.Collection, Bound(m.Start), Bound(m.End),
			len(extra), len(held.digests), maxDeleteShare*100, sample(extra), out.Upserted)
	}
	for chunk := range slices.Chunk(extra, deleteBatch) {
		resp, err := tgt.Delete(ctx, &milvuspb.DeleteRequest{DbName: t.Database, CollectionName: t.Collection,
			PartitionName: t.Partition, Expr: milvusx.InFilter(t.PK.GetName(), chunk)})
		if err := milvusx.Check(resp, err); err != nil {
			return out, fmt.Errorf("target: delete from %s.%s: %w", t.Database, t.Collection, err)
		}
		out.Deleted += int64(len(chunk))
	}
	out.DeletedSample = sample(extra)
	return out, nil
}

// Bound shows a range bound as text: "…" for an open one ("").
func Bound(s string) string {
	if s == "" {
		return "…"
	}
	return s
}
