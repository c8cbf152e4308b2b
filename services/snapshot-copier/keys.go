package copier

import (
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"

	"github.com/zdm-io/zdm/pkg/milvusx"
)

// Conversions between keys and ranges on the bus and in memory.

func keyToPB(k *milvusx.Key) *eventspb.PrimaryKey {
	switch {
	case k == nil:
		return nil
	case k.IsStr:
		return &eventspb.PrimaryKey{Key: &eventspb.PrimaryKey_StringKey{StringKey: k.Str}}
	}
	return &eventspb.PrimaryKey{Key: &eventspb.PrimaryKey_IntKey{IntKey: k.Int}}
}

func keyFromPB(k *eventspb.PrimaryKey) *milvusx.Key {
	switch v := k.GetKey().(type) {
	case *eventspb.PrimaryKey_IntKey:
		return &milvusx.Key{Int: v.IntKey}
	case *eventspb.PrimaryKey_StringKey:
		return &milvusx.Key{Str: v.StringKey, IsStr: true}
	}
	return nil
}

func rangeToPB(r milvusx.Range, isStr bool) *eventspb.KeyRange {
	if isStr {
		b := &eventspb.KeyRange_StringBounds{}
		if r.Start != nil {
			b.Start = &r.Start.Str
		}
		if r.End != nil {
			b.End = &r.End.Str
		}
		return &eventspb.KeyRange{Bounds: &eventspb.KeyRange_StringBounds_{StringBounds: b}}
	}
	b := &eventspb.KeyRange_IntBounds{}
	if r.Start != nil {
		b.Start = &r.Start.Int
	}
	if r.End != nil {
		b.End = &r.End.Int
	}
	return &eventspb.KeyRange{Bounds: &eventspb.KeyRange_IntBounds_{IntBounds: b}}
}

func rangeFromPB(r *eventspb.KeyRange) milvusx.Range {
	var out milvusx.Range
	if b := r.GetStringBounds(); b != nil {
		if b.Start != nil {
			out.Start = &milvusx.Key{Str: b.GetStart(), IsStr: true}
		}
		if b.End != nil {
			out.End = &milvusx.Key{Str: b.GetEnd(), IsStr: true}
		}
		return out
	}
	b := r.GetIntBounds()
	if b.Start != nil {
		out.Start = &milvusx.Key{Int: b.GetStart()}
	}
	if b.End != nil {
		out.End = &milvusx.Key{Int: b.GetEnd()}
	}
	return out
}
