package milvusx

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
)

// MaxQueryRows is the largest limit Milvus accepts on a query.
const MaxQueryRows = 16384

// Key is a primary key: Int64 or VarChar.
type Key struct {
	Int   int64
	Str   string
	IsStr bool
}

func (k Key) String() string {
	if k.IsStr {
		return strconv.Quote(k.Str)
	}
	return strconv.FormatInt(k.Int, 10)
}

// Range is a half-open primary-key range [Start, End); a nil bound is
// open.
type Range struct {
	Start, End *Key
}

// Table names a collection (and optionally one partition) and its
// primary key, for keyset paging.
type Table struct {
	Database, Collection string
	// Partition to read from and write into; empty for all partitions
	// (and for partition-key collections, where Milvus routes rows itself).
	Partition string
	PK        *schemapb.FieldSchema
	// Schema is the whole collection schema.
	Schema *schemapb.CollectionSchema
	// ReadTs, when set, is the source timestamp every read must see up
	// to (see ReadTimestamp); zero reads with Strong consistency.
	ReadTs uint64
	// Exact asks for pages proven complete by count(*) (see keyScan),
	// with the keys held twice named, for a table no one writes to while
	// it is read (verification, repair): a page whose counts and keys
	// cannot be reconciled is read again and then is an error. Reads at
	// ReadTs are not snapshots (each query sees the writes applied when it
	// runs, half an upsert included), so a table written to meanwhile (the
	// copy, the plan) is read without the proof: a full page is checked by
	// a second keys-only query, and the range still ends only where
	// count(*) finds no row above the page.
	Exact bool
}

// ReadTimestamp allocates a timestamp on c for Table.ReadTs: reads with it
// see every write acknowledged before the call, like Strong consistency,
// but only the first read waits for the servers to catch up to it; a
// Strong read waits for the next time tick every time (about 200 ms on
// Milvus 2.3). Servers without AllocTimestamp (milvus-lite) return 0.
func ReadTimestamp(ctx context.Context, c milvuspb.MilvusServiceClient) (uint64, error) {
	resp, err := c.AllocTimestamp(ctx, &milvuspb.AllocTimestampRequest{})
	if err := Check(resp, err); err != nil {
		if IsUnimplemented(err) {
			return 0, nil
		}
		return 0, fmt.Errorf("allocate a read timestamp: %w", err)
	}
	return resp.GetTimestamp(), nil
}

// Consistency sets the consistency of a read of t on req.
func (t Table) Consistency(req *milvuspb.QueryRequest) {
	req.ConsistencyLevel = commonpb.ConsistencyLevel_Strong
	if t.ReadTs != 0 {
		req.ConsistencyLevel, req.GuaranteeTimestamp = commonpb.ConsistencyLevel_Customized, t.ReadTs
	}
}

// DescribeTable reads the primary key of a collection.
func DescribeTable(ctx context.Context, c milvuspb.MilvusServiceClient, db, name string) (Table, error) {
	d, err := c.DescribeCollection(ctx, &milvuspb.DescribeCollectionRequest{DbName: db, CollectionName: name})
	if err := Check(d, err); err != nil {
		return Table{}, fmt.Errorf("describe %s.%s: %w", db, name, err)
	}
	for _, f := range d.GetSchema().GetFields() {
		if f.GetIsPrimaryKey() {
			return Table{Database: db, Collection: name, PK: f, Schema: d.GetSchema()}, nil
		}
	}
	return Table{}, fmt.Errorf("%s.%s has no primary key", db, name)
}

// Page is one page of a keyset scan: every row of the table whose key is
// above the previous page's Last and at most this page's Last, each key
// once.
type Page struct {
	// Fields are the rows, in the server's order (not necessarily by key);
	// unset for a page of keys alone (QueryKeys).
	Fields []*schemapb.FieldData
	// Keys are the rows' keys, in the same order as Fields (ascending for
	// QueryKeys), each once.
	Keys []Key
	// Last is the largest key of the page; the next page starts above it.
	Last Key
	// More is false when the page reached the end of the range.
	More bool
	// Duplicates are the page's keys that the table holds more than one
	// row for, smallest first (racing upserts on Milvus 2.3 leave two
	// rows for one key); a query returns one row for each.
	Duplicates []Key
	// Held is how many rows the table holds for each of Duplicates.
	Held map[Key]int64
}

// QueryPage returns the next page of r above after: about limit rows,
// each key of the page once (see QueryKeys). It reads the page's keys
// first, then every row between the first and the last of them with a
// query that has no limit: a limited query makes each shard and segment
// read a whole page of rows for the proxy to keep one, so reading whole
// rows only once their key range is known reads each row once. Rows that
// query left out (on Milvus 2.3 a range holding a key twice loses as many
// other keys from the reply) are read again by key; a row that cannot be
// read at all is an error wrapping ErrIncompleteRead.
func QueryPage(ctx context.Context, src milvuspb.MilvusServiceClient, t Table, r Range, after *Key, limit int) (Page, error) {
	kp, err := QueryKeys(ctx, src, t, r, after, limit)
	if err != nil || len(kp.Keys) == 0 {
		return kp, err
	}
	data, keys, err := query(ctx, src, t, rangeExpr(t.PK, r, after, &kp.Last), 0, []string{"*"})
	if err != nil {
		return Page{}, err
	}
	kp.Fields, kp.Keys, err = exactRows(ctx, src, t, kp.Keys, data, keys)
	return kp, err
}

// QueryKeys returns the keys of the next page of r above after: the keys
// of r in (after, Last], each once, in ascending order, about limit of
// them. It trusts no single reply to be complete: milvus-lite 3 returns a
// limited query's rows from each segment in turn, and Milvus 2.3 returns
// fewer keys than the limit when the range holds a key twice, so the end
// of the range is where count(*) says no row is left, never a short page.
// For an Exact table each page is proven by count(*) (see keyScan) and
// its keys held twice named; a page that cannot be proven is read again,
// then is an error wrapping ErrIncompleteRead.
func QueryKeys(ctx context.Context, src milvuspb.MilvusServiceClient, t Table, r Range, after *Key, limit int) (Page, error) {
	for try := 1; ; try++ {
		s := &keyScan{ctx: ctx, c: src, t: t, r: r, budget: scanBudget}
		p, err := s.page(after, limit)
		if errors.Is(err, ErrIncompleteRead) && t.Exact && try < exactTries {
			continue
		}
		return p, err
	}
}

// exactTries is how often a page of an Exact table is read before it is
// an error.
const exactTries = 3

// CompareKeys orders keys, for slices.SortFunc.
func CompareKeys(a, b Key) int {
	switch {
	case Less(a, b):
		return -1
	case Less(b, a):
		return 1
	}
	return 0
}

// query reads the rows matching expr, up to limit of them (0: all).
func query(ctx context.Context, src milvuspb.MilvusServiceClient, t Table, expr string, limit int, fields []string) ([]*schemapb.FieldData, []Key, error) {
	req := &milvuspb.QueryRequest{DbName: t.Database, CollectionName: t.Collection, Expr: expr, OutputFields: fields}
	if limit > 0 {
		req.QueryParams = []*commonpb.KeyValuePair{{Key: "limit", Value: strconv.Itoa(limit)}}
	}
	t.Consistency(req)
	if t.Partition != "" {
		req.PartitionNames = []string{t.Partition}
	}
	resp, err := src.Query(ctx, req)
	if err := Check(resp, err); err != nil {
		return nil, nil, fmt.Errorf("query %s.%s: %w", t.Database, t.Collection, err)
	}
	keys, err := PKValues(resp.GetFieldsData(), t.PK)
	if err != nil {
		return nil, nil, err
	}
	TypeEmptyArrays(resp.GetFieldsData(), t.Schema)
	return resp.GetFieldsData(), keys, nil
}

// rangeExpr is the filter for keys in r above after and, when upTo is
// set, at most upTo.
func rangeExpr(pkField *schemapb.FieldSchema, r Range, after, upTo *Key) string {
	pk := pkField.GetName()
	var parts []string
	switch {
	case after != nil && isMinInt(after):
		// Milvus parses -9223372036854775808 as minus an out-of-range
		// literal, so the smallest Int64 is never written out.
		parts = append(parts, fmt.Sprintf("%s >= %d", pk, math.MinInt64+1))
	case after != nil:
		parts = append(parts, fmt.Sprintf("%s > %s", pk, literal(*after)))
	case r.Start != nil && !isMinInt(r.Start):
		parts = append(parts, fmt.Sprintf("%s >= %s", pk, literal(*r.Start)))
	}
	if upTo != nil {
		parts = append(parts, fmt.Sprintf("%s <= %s", pk, literal(*upTo)))
	}
	if r.End != nil {
		if isMinInt(r.End) {
			return fmt.Sprintf("%s < %d && %s > %d", pk, math.MinInt64+1, pk, math.MinInt64+1) // empty
		}
		parts = append(parts, fmt.Sprintf("%s < %s", pk, literal(*r.End)))
	}
	if len(parts) == 0 {
		// Every key: Milvus needs a filter, and this one holds for all.
		if pkField.GetDataType() == schemapb.DataType_VarChar {
			return pk + ` >= ""`
		}
		// Not "pk >= 0 || pk < 0": milvus-lite 2.5 rejects OR on
		// partition-key collections. The smallest Int64 key is refused
		// at planning instead (see HasMinInt64Key).
		return fmt.Sprintf("%s >= %d", pk, int64(math.MinInt64+1))
	}
	return strings.Join(parts, " && ")
}

func isMinInt(k *Key) bool { return !k.IsStr && k.Int == math.MinInt64 }

func literal(k Key) string {
	if !k.IsStr {
		return strconv.FormatInt(k.Int, 10)
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(k.Str) + `"`
}

func Less(a, b Key) bool {
	if a.IsStr {
		return a.Str < b.Str
	}
	return a.Int < b.Int
}

// PKValues extracts the primary keys from query results.
func PKValues(fields []*schemapb.FieldData, pk *schemapb.FieldSchema) ([]Key, error) {
	for _, f := range fields {
		if f.GetFieldName() != pk.GetName() {
			continue
		}
		sc := f.GetScalars()
		switch pk.GetDataType() {
		case schemapb.DataType_Int64:
			vals := sc.GetLongData().GetData()
			out := make([]Key, len(vals))
			for i, v := range vals {
				out[i] = Key{Int: v}
			}
			return out, nil
		case schemapb.DataType_VarChar:
			vals := sc.GetStringData().GetData()
			out := make([]Key, len(vals))
			for i, v := range vals {
				out[i] = Key{Str: v, IsStr: true}
			}
			return out, nil
		}
		return nil, fmt.Errorf("primary key type %s is not supported", pk.GetDataType())
	}
	if len(fields) == 0 {
		return nil, nil
	}
	return nil, errors.New("query result lacks the primary key field")
}

// HasMinInt64Key reports whether an Int64-keyed table holds the key
// -9223372036854775808, which Milvus's filter parser cannot express, so
// keyset paging cannot reach it. Copies refuse such tables rather than
// miss the row.
func HasMinInt64Key(ctx context.Context, c milvuspb.MilvusServiceClient, t Table) (bool, error) {
	if t.PK.GetDataType() != schemapb.DataType_Int64 {
		return false, nil
	}
	req := &milvuspb.QueryRequest{DbName: t.Database, CollectionName: t.Collection,
		Expr:         fmt.Sprintf("%s < %d", t.PK.GetName(), int64(math.MinInt64+1)),
		OutputFields: []string{t.PK.GetName()},
		QueryParams:  []*commonpb.KeyValuePair{{Key: "limit", Value: "1"}}}
	t.Consistency(req)
	resp, err := c.Query(ctx, req)
	if err := Check(resp, err); err != nil {
		return false, fmt.Errorf("query %s.%s: %w", t.Database, t.Collection, err)
	}
	keys, err := PKValues(resp.GetFieldsData(), t.PK)
	return len(keys) > 0, err
}

// InFilter is the filter `pk in [keys]`.
func InFilter(pk string, keys []Key) string {
	lits := make([]string, len(keys))
	for i, k := range keys {
		lits[i] = literal(k)
	}
	return pk + " in [" + strings.Join(lits, ",") + "]"
}
