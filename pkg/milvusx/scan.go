package milvusx

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
)

// ErrIncompleteRead is returned when a range cannot be proven read in
// full: a reply left keys out and asking again did not find them. A
// caller that would act on the absence of a key (a repair deleting it)
// must stop instead.
var ErrIncompleteRead = errors.New("range not read completely")

// scanBudget bounds the queries one page may take while it proves itself
// complete: about 2·log2(page) per duplicated key, far above what any
// page has needed.
const scanBudget = 20000

// keyScan reads pages of keys of one range of a table and proves each
// complete by count(*), which counts every row, duplicates included,
// whatever the reply limits of the server. Query replies are not trusted
// to be complete:
//   - Milvus 2.3.5 keeps fewer keys than a query's limit when the range
//     holds a key twice (about one key lost per duplicate), and a query
//     without limit loses as many;
//   - milvus-lite 3 returns a limited query's rows from each segment in
//     turn, not the smallest keys.
//
// A page's keys K, largest `last`, are the whole of (after, last] when
// count(*) over that range equals |K|. When it is higher, either keys are
// missing or some are held twice: the range is split at K's middle key
// and each half proven the same way, down to a single key, which is held
// twice when count(pk == key) accounts for the whole count.
type keyScan struct {
	ctx    context.Context
	c      milvuspb.MilvusServiceClient
	t      Table
	r      Range
	budget int
	dups   []Key
	held   map[Key]int64
}

// page returns the keys of r in (after, Last], about limit of them.
func (s *keyScan) page(after *Key, limit int) (Page, error) {
	// Milvus caps every query at MaxQueryRows.
	limit = max(min(limit, MaxQueryRows-1), 1)
	if !s.t.Exact {
		return s.loosePage(after, limit)
	}
	var upTo *Key // inclusive upper bound while narrowing
	for {
		keys, err := s.keys(after, upTo, limit)
		if err != nil {
			return Page{}, err
		}
		if len(keys) == 0 {
			n, err := s.count(after, upTo)
			if err != nil {
				return Page{}, err
			}
			if n == 0 && upTo == nil {
				return Page{}, nil // the end of the range
			}
			// Rows are there, but the reply held none of their keys: ask
			// for as many keys as there are rows.
			if keys, err = s.keys(after, upTo, int(min(n, MaxQueryRows-1))); err != nil {
				return Page{}, err
			}
			if len(keys) == 0 {
				return Page{}, fmt.Errorf("%w: %s.%s: count(*) finds %d rows above %s that no query returns",
					ErrIncompleteRead, s.t.Database, s.t.Collection, n, keyText(after))
			}
		}
		last := keys[len(keys)-1]
		n, err := s.count(after, &last)
		if err != nil {
			return Page{}, err
		}
		if n > int64(len(keys)+limit) && len(keys) > 1 {
			// Far more keys lie at or below last than the reply held: it
			// was not the smallest keys (milvus-lite 3). Narrow to the
			// lower half of those it held and ask again.
			upTo = &keys[len(keys)/2-1]
			continue
		}
		if keys, err = s.exact(after, keys, n, false); err != nil {
			return Page{}, err
		}
		more := upTo != nil
		if !more {
			above, err := s.count(&last, nil)
			if err != nil {
				return Page{}, err
			}
			more = above > 0
		}
		slices.SortFunc(s.dups, CompareKeys)
		return Page{Keys: keys, Last: last, More: more, Duplicates: s.dups, Held: s.held}, nil
	}
}

// loosePage reads a page of a table that writes go on to (not Exact),
// where counts move under the reads and a proof would chase them: a full
// page of keys is accepted when a second keys-only query finds no other
// key at or below its largest (milvus-lite 3 returns rows segment by
// segment), else it is narrowed; and the range ends only where count(*)
// finds no row above the page, never at a page shorter than its limit
// (Milvus 2.3 returns fewer keys than the limit when a key is held
// twice).
func (s *keyScan) loosePage(after *Key, limit int) (Page, error) {
	var upTo *Key // inclusive upper bound while narrowing
	for {
		keys, err := s.keys(after, upTo, limit)
		if err != nil {
			return Page{}, err
		}
		if len(keys) == 0 {
			if upTo != nil {
				return Page{}, fmt.Errorf("%w: %s.%s: no key at or below %s that a query found before", ErrIncompleteRead, s.t.Database, s.t.Collection, upTo)
			}
			return Page{}, nil
		}
		last := keys[len(keys)-1]
		if len(keys) < limit {
			more := upTo != nil
			if !more {
				n, err := s.count(&last, nil)
				if err != nil {
					return Page{}, err
				}
				more = n > 0
			}
			return Page{Keys: keys, Last: last, More: more}, nil
		}
		check, err := s.keys(after, &last, limit+1)
		if err != nil {
			return Page{}, err
		}
		if len(check) <= len(keys) {
			return Page{Keys: keys, Last: last, More: true}, nil
		}
		// Keys at or below last are missing: narrow to the lower half of
		// those the check found there and ask again.
		upTo = &check[max(len(check)/2-1, 0)]
	}
}

// exact returns every key in (after, known's last], given some of them
// (known, ascending, its last key included) and n, the rows in that
// range. Keys missing from known are first asked for in one query of the
// whole range (milvus-lite 3 leaves many out of a limited reply, and a
// query allowed all n rows returns them); what that does not settle is
// keys held twice, or keys such a key hides, found by splitting.
func (s *keyScan) exact(after *Key, known []Key, n int64, fetched bool) ([]Key, error) {
	last := known[len(known)-1]
	switch {
	case n == int64(len(known)):
		return known, nil
	case n < int64(len(known)):
		return nil, fmt.Errorf("%w: %s.%s: count(*) finds %d rows in (%s, %s] where a query returned %d keys",
			ErrIncompleteRead, s.t.Database, s.t.Collection, n, keyText(after), last, len(known))
	case !fetched && n < MaxQueryRows:
		more, err := s.keys(after, &last, int(n))
		if err != nil {
			return nil, err
		}
		merged := slices.Compact(slices.SortedFunc(slices.Values(append(more, known...)), CompareKeys))
		return s.exact(after, merged, n, true)
	case len(known) == 1:
		held, err := s.countKey(last)
		if err != nil {
			return nil, err
		}
		if held == n {
			s.dups = append(s.dups, last)
			if s.held == nil {
				s.held = map[Key]int64{}
			}
			s.held[last] = held
			return known, nil
		}
		// Other keys hide below last: ask for all of them.
		more, err := s.keys(after, &last, int(min(n, MaxQueryRows-1)))
		if err != nil {
			return nil, err
		}
		merged := slices.Compact(slices.SortedFunc(slices.Values(append(more, last)), CompareKeys))
		if len(merged) == 1 {
			return nil, fmt.Errorf("%w: %s.%s: count(*) finds %d rows in (%s, %s] that no query returns",
				ErrIncompleteRead, s.t.Database, s.t.Collection, n-held, keyText(after), last)
		}
		return s.exact(after, merged, n, true)
	}
	h := len(known) / 2
	mid := known[h-1]
	left, err := s.count(after, &mid)
	if err != nil {
		return nil, err
	}
	lo, err := s.exact(after, known[:h], left, true)
	if err != nil {
		return nil, err
	}
	hi, err := s.exact(&mid, known[h:], n-left, true)
	if err != nil {
		return nil, err
	}
	return append(slices.Clip(lo), hi...), nil
}

// keys returns the distinct keys of r in (after, upTo], at most limit of
// them (0: all), ascending.
func (s *keyScan) keys(after, upTo *Key, limit int) ([]Key, error) {
	if err := s.spend(); err != nil {
		return nil, err
	}
	_, keys, err := query(s.ctx, s.c, s.t, rangeExpr(s.t.PK, s.r, after, upTo), limit, []string{s.t.PK.GetName()})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(keys, CompareKeys)
	return slices.Compact(keys), nil
}

// count returns count(*) of r in (after, upTo].
func (s *keyScan) count(after, upTo *Key) (int64, error) {
	if err := s.spend(); err != nil {
		return 0, err
	}
	return CountRows(s.ctx, s.c, s.t, rangeExpr(s.t.PK, s.r, after, upTo))
}

// countKey returns how many rows hold key k.
func (s *keyScan) countKey(k Key) (int64, error) {
	if err := s.spend(); err != nil {
		return 0, err
	}
	return CountRows(s.ctx, s.c, s.t, InFilter(s.t.PK.GetName(), []Key{k}))
}

func (s *keyScan) spend() error {
	if s.budget--; s.budget < 0 {
		return fmt.Errorf("%w: %s.%s: a page took more queries than it may", ErrIncompleteRead, s.t.Database, s.t.Collection)
	}
	return nil
}

// CountRows returns count(*) of the rows of t matching expr ("" for
// every row), read at t.ReadTs (or with Strong consistency). Rows held
// twice count twice.
func CountRows(ctx context.Context, c milvuspb.MilvusServiceClient, t Table, expr string) (int64, error) {
	req := &milvuspb.QueryRequest{DbName: t.Database, CollectionName: t.Collection, Expr: expr, OutputFields: []string{"count(*)"}}
	t.Consistency(req)
	if t.Partition != "" {
		req.PartitionNames = []string{t.Partition}
	}
	resp, err := c.Query(ctx, req)
	if err := Check(resp, err); err != nil {
		return 0, fmt.Errorf("count(*) of %s.%s: %w", t.Database, t.Collection, err)
	}
	for _, f := range resp.GetFieldsData() {
		if d := f.GetScalars().GetLongData().GetData(); len(d) == 1 {
			return d[0], nil
		}
	}
	return 0, fmt.Errorf("count(*) of %s.%s: no count in the reply", t.Database, t.Collection)
}

// maxRereads bounds how often exactRows asks again for rows a reply left
// out.
const maxRereads = 3

// exactRows returns one row for each of want, from data (whose keys are
// got) and, for keys it lacks, from queries by key. Rows of other keys,
// and second rows of a key, are dropped. A key whose row cannot be read
// is an error for an Exact table and left out otherwise (see Table.Exact).
func exactRows(ctx context.Context, c milvuspb.MilvusServiceClient, t Table, want []Key, data []*schemapb.FieldData, got []Key) ([]*schemapb.FieldData, []Key, error) {
	wanted := make(map[Key]bool, len(want))
	for _, k := range want {
		wanted[k] = true
	}
	if len(got) == len(want) && !slices.ContainsFunc(got, func(k Key) bool { return !wanted[k] }) &&
		len(slices.Compact(slices.SortedFunc(slices.Values(got), CompareKeys))) == len(got) {
		return data, got, nil // the common case: the reply is exact
	}
	var rows Rows
	var keys []Key
	take := func(data []*schemapb.FieldData, got []Key) error {
		for i, k := range got {
			if !wanted[k] {
				continue
			}
			if err := rows.Add(data, i, len(got)); err != nil {
				return err
			}
			keys = append(keys, k)
			delete(wanted, k)
		}
		return nil
	}
	if err := take(data, got); err != nil {
		return nil, nil, err
	}
	for try := 0; len(wanted) > 0; try++ {
		if try == maxRereads && !t.Exact {
			// Rewritten while read (an upsert deletes before it inserts):
			// a table written to is read as it is found.
			break
		}
		if try == maxRereads {
			return nil, nil, fmt.Errorf("%w: %s.%s: %d rows of keys the range holds cannot be read (e.g. %s)",
				ErrIncompleteRead, t.Database, t.Collection, len(wanted), firstKey(wanted))
		}
		missing := make([]Key, 0, len(wanted))
		for k := range wanted {
			missing = append(missing, k)
		}
		data, got, err := query(ctx, c, t, InFilter(t.PK.GetName(), missing), 0, []string{"*"})
		if err != nil {
			return nil, nil, err
		}
		if err := take(data, got); err != nil {
			return nil, nil, err
		}
	}
	return rows.Fields(), keys, nil
}

func firstKey(m map[Key]bool) string {
	var first *Key
	for k := range m {
		if first == nil || Less(k, *first) {
			first = &k
		}
	}
	return first.String()
}

func keyText(k *Key) string {
	if k == nil {
		return "the start"
	}
	return k.String()
}
