package copier

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"google.golang.org/protobuf/proto"

	"github.com/zdm-io/zdm/pkg/milvusx"
	"github.com/zdm-io/zdm/pkg/stage"
)

// DefaultBatchBytes is the default size of a page: Milvus refuses
// inserts over 64 MB, and a copier holds about four pages per worker.
const DefaultBatchBytes = 8 << 20

// maxValueBytes bounds one JSON, Array or sparse vector value for sizing
// the first page: Milvus's default limit for a JSON value.
const maxValueBytes = 64 << 10

// firstPageRows is how many rows the first page of a range asks for: as
// many as fit in batchBytes if every row is as large as the schema allows.
// Later pages are sized from the bytes per row actually read.
func firstPageRows(s *schemapb.CollectionSchema, batchBytes int) int {
	size := 0
	if s.GetEnableDynamicField() {
		size += maxValueBytes
	}
	// Milvus checks that dim and max_length are integers when a collection
	// is made; were one not, it would count as 0 in this first estimate.
	for _, f := range s.GetFields() {
		dim := 0
		for _, kv := range f.GetTypeParams() {
			if kv.GetKey() == "dim" {
				dim, _ = strconv.Atoi(kv.GetValue())
			}
		}
		switch f.GetDataType() {
		case schemapb.DataType_Bool, schemapb.DataType_Int8:
			size++
		case schemapb.DataType_Int16:
			size += 2
		case schemapb.DataType_Int32, schemapb.DataType_Float:
			size += 4
		case schemapb.DataType_Int64, schemapb.DataType_Double:
			size += 8
		case schemapb.DataType_VarChar, schemapb.DataType_String:
			size += 4 // length prefix and tag
			for _, kv := range f.GetTypeParams() {
				if kv.GetKey() == "max_length" {
					n, _ := strconv.Atoi(kv.GetValue())
					size += n
				}
			}
		case schemapb.DataType_FloatVector:
			size += 4 * dim
		case schemapb.DataType_BinaryVector:
			size += dim / 8
		case schemapb.DataType_Float16Vector, schemapb.DataType_BFloat16Vector:
			size += 2 * dim
		default: // JSON, Array, sparse vectors and what comes next
			size += maxValueBytes
		}
	}
	return min(max(batchBytes/max(size, 1), 1), milvusx.MaxQueryRows)
}

// CopyStats are the rows and bytes a copy wrote.
type CopyStats struct {
	Rows, Bytes int64
}

// CopyOptions tune CopyRange.
type CopyOptions struct {
	// Resume, when set, is the last key of a previous copy's checkpoint.
	Resume *milvusx.Key
	// Fresh says that nothing of the range can be on the target yet (no
	// copy of it ever started), so the target is not asked what it holds:
	// asking loads the collection there, which makes every insert dearer.
	Fresh bool
	// BatchBytes caps each page; 0 means DefaultBatchBytes.
	BatchBytes int
	// Pace, if set, is called before each page is written with its rows
	// and bytes; it may wait (a throttle), and its error stops the copy
	// before the page is written.
	Pace func(rows, bytes int64) error
	// Checkpoint, if set, is called after each page is written to the
	// target, with the last key written and the totals so far; a unit
	// resumed from that key neither loses nor repeats a row. Its error
	// stops the copy.
	Checkpoint func(last milvusx.Key, stats CopyStats) error
}

// CopyRange copies the rows of r from src to tgt in pages by primary key:
// each page asks for the next keys above the last one copied, never an
// offset. Pages are written with insert, which is cheaper than upsert and
// cannot duplicate: a page's keys are above everything written before.
//
// When opts.Resume is set, copying starts after it. Pages written after
// the last checkpoint (or before the first) may have reached the target
// before a crash, so the target is first asked for the largest key it
// holds above the checkpoint (or in the whole range), and pages are
// written with upsert, which replaces rows instead of duplicating them,
// until that key is passed.
//
// The next page is read while the current one is written, so a copy runs
// at the pace of the slower side rather than of both added up; at most
// two pages (one being written, the next being read or waiting for it)
// are in memory.
func CopyRange(ctx context.Context, src, tgt milvuspb.MilvusServiceClient, t milvusx.Table, r milvusx.Range, opts CopyOptions) (CopyStats, error) {
	resume := opts.Resume
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pages, read := readAhead(ctx, src, t, r, resume, opts.BatchBytes)
	var stats CopyStats
	var upsert bool
	var through *milvusx.Key
	if !opts.Fresh {
		var err error
		if upsert, through, err = written(ctx, tgt, t, r, resume); err != nil {
			return stats, stage.OnTarget(err)
		}
	}
	for p := range pages {
		if opts.Pace != nil {
			if err := opts.Pace(int64(len(p.Keys)), int64(p.size)); err != nil {
				return stats, err
			}
		}
		if err := ctx.Err(); err != nil {
			return stats, err // stopping: start no new page
		}
		if err := write(ctx, tgt, t, p.Fields, len(p.Keys), upsert); err != nil {
			return stats, stage.OnTarget(err) // the deferred cancel stops the reader
		}
		if upsert && through != nil && !milvusx.Less(p.Last, *through) {
			upsert = false // past every key the target held
		}
		stats.Rows += int64(len(p.Keys))
		stats.Bytes += int64(p.size)
		if opts.Checkpoint != nil {
			if err := opts.Checkpoint(p.Last, stats); err != nil {
				return stats, err
			}
		}
	}
	return stats, stage.OnSource(<-read)
}

// readAhead reads the pages of r above after (nil: from the start) on a
// goroutine of its own, one page ahead of whoever takes them, with pages
// of batchBytes (0: DefaultBatchBytes). pages closes at the end, then read
// has the reader's result; cancel ctx to stop it early.
func readAhead(ctx context.Context, src milvuspb.MilvusServiceClient, t milvusx.Table, r milvusx.Range, after *milvusx.Key, batchBytes int) (pages <-chan sizedPage, read <-chan error) {
	if batchBytes <= 0 {
		batchBytes = DefaultBatchBytes
	}
	out, done := make(chan sizedPage), make(chan error, 1)
	go func() {
		defer close(out)
		done <- readPages(ctx, src, t, r, after, batchBytes, out)
	}()
	return out, done
}

// written reports whether the target holds rows of r above resume (nil:
// anywhere in r), which a copy interrupted after writing a page but before
// its checkpoint left there, and the largest of their keys (nil: too many
// to list, so upsert to the end). A unit with no checkpoint is asked too:
// its first page may have landed before the copier died.
func written(ctx context.Context, tgt milvuspb.MilvusServiceClient, t milvusx.Table, r milvusx.Range, resume *milvusx.Key) (bool, *milvusx.Key, error) {
	t.ReadTs = 0 // a source timestamp means nothing to the target
	// A resume often follows a restart of the target, which may have come
	// back with its collections released.
	if err := milvusx.EnsureLoaded(ctx, tgt, t.Database, t.Collection); err != nil {
		return false, nil, err
	}
	p, err := milvusx.QueryKeys(ctx, tgt, t, r, resume, milvusx.MaxQueryRows)
	if err != nil {
		return false, nil, err
	}
	switch {
	case len(p.Keys) == 0:
		return false, nil, nil
	case p.More:
		return true, nil, nil
	}
	return true, &p.Last, nil
}

type sizedPage struct {
	milvusx.Page
	size int // bytes of the page's fields
}

// ReadRange reads the rows of r from src page by page as CopyRange does,
// and drops them: what a copy costs the source, measured alone
// (make bench-copy). It returns the rows read.
func ReadRange(ctx context.Context, src milvuspb.MilvusServiceClient, t milvusx.Table, r milvusx.Range, batchBytes int) (int64, error) {
	pages, read := readAhead(ctx, src, t, r, nil, batchBytes)
	var rows int64
	for p := range pages {
		rows += int64(len(p.Keys))
	}
	return rows, <-read
}

// readPages sends the pages of r above after to out, sizing each from
// the bytes per row of the one before, until the range ends.
func readPages(ctx context.Context, src milvuspb.MilvusServiceClient, t milvusx.Table, r milvusx.Range, after *milvusx.Key, batchBytes int, out chan<- sizedPage) error {
	limit := firstPageRows(t.Schema, batchBytes)
	for {
		page, err := milvusx.QueryPage(ctx, src, t, r, after, limit)
		if err != nil || len(page.Keys) == 0 && !page.More {
			return err
		}
		if len(page.Keys) == 0 {
			// Every row of the page was being rewritten as it was read:
			// replay brings them; go on above it.
			after = &page.Last
			continue
		}
		size := 0
		for _, f := range page.Fields {
			size += proto.Size(f)
		}
		select {
		case out <- sizedPage{page, size}:
		case <-ctx.Done():
			return ctx.Err()
		}
		if !page.More {
			return nil
		}
		last := page.Last
		after = &last
		perRow := max(size/len(page.Keys), 1)
		limit = min(max(batchBytes/perRow, 1), milvusx.MaxQueryRows)
	}
}

// writeTimeout bounds one insert or upsert, which a stopping copier lets
// finish (see write).
const writeTimeout = 2 * time.Minute

// write inserts (or upserts) one page into the target. A page being
// written is finished even when ctx ends: a cancelled request can still
// land on the server after the unit has gone to another copier, which
// would then not see those rows when it checks what the target holds,
// and write them again. Only writeTimeout bounds it.
func write(ctx context.Context, tgt milvuspb.MilvusServiceClient, t milvusx.Table, fields []*schemapb.FieldData, rows int, upsert bool) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	var (
		resp *milvuspb.MutationResult
		err  error
	)
	if upsert {
		resp, err = tgt.Upsert(ctx, &milvuspb.UpsertRequest{DbName: t.Database, CollectionName: t.Collection,
			PartitionName: t.Partition, FieldsData: fields, NumRows: uint32(rows)})
	} else {
		resp, err = tgt.Insert(ctx, &milvuspb.InsertRequest{DbName: t.Database, CollectionName: t.Collection,
			PartitionName: t.Partition, FieldsData: fields, NumRows: uint32(rows)})
	}
	if err := milvusx.Check(resp, err); err != nil {
		op := "insert"
		if upsert {
			op = "upsert"
		}
		return fmt.Errorf("%s into %s.%s: %w", op, t.Database, t.Collection, err)
	}
	return nil
}
