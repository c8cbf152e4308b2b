package streamer

import (
	"fmt"

	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"google.golang.org/protobuf/proto"

	"github.com/zdm-io/zdm/pkg/milvusx"
	"github.com/zdm-io/zdm/pkg/natsbus"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
)

// maxChangeBytes bounds one change on the stream: a larger insert or
// upsert (Milvus takes up to 64 MiB) is recorded as several, each with a
// share of its rows in their order, and a larger delete by key as several
// deletes. Replayed in order they do what the one request did.
const maxChangeBytes = 512 << 10

// split returns ev as changes of at most about maxChangeBytes each.
func split(ev *eventspb.ChangeEvent, req *request) ([]*eventspb.ChangeEvent, error) {
	if proto.Size(ev) <= maxChangeBytes {
		return []*eventspb.ChangeEvent{ev}, nil
	}
	keys := natsbus.Keys(ev.GetPrimaryKeys())
	switch m := req.msg.(type) {
	case *milvuspb.InsertRequest, *milvuspb.UpsertRequest:
		fields, rows := req.fields(), 0
		if i, ok := m.(*milvuspb.InsertRequest); ok {
			rows = int(i.GetNumRows())
		} else {
			rows = int(m.(*milvuspb.UpsertRequest).GetNumRows())
		}
		parts := proto.Size(ev)/maxChangeBytes + 1
		per := max((rows+parts-1)/parts, 1)
		var out []*eventspb.ChangeEvent
		for from := 0; from < rows; from += per {
			to := min(from+per, rows)
			var sub milvusx.Rows
			for i := from; i < to; i++ {
				if err := sub.Add(fields, i, rows); err != nil {
					return nil, fmt.Errorf("split %s: %w", req.name, err)
				}
			}
			var b []byte
			var err error
			switch r := m.(type) {
			case *milvuspb.InsertRequest:
				b, err = proto.Marshal(&milvuspb.InsertRequest{Base: r.GetBase(), DbName: r.GetDbName(), CollectionName: r.GetCollectionName(),
					PartitionName: r.GetPartitionName(), FieldsData: sub.Fields(), NumRows: uint32(to - from)})
			case *milvuspb.UpsertRequest:
				b, err = proto.Marshal(&milvuspb.UpsertRequest{Base: r.GetBase(), DbName: r.GetDbName(), CollectionName: r.GetCollectionName(),
					PartitionName: r.GetPartitionName(), FieldsData: sub.Fields(), NumRows: uint32(to - from)})
			}
			if err != nil {
				return nil, err
			}
			part := proto.Clone(ev).(*eventspb.ChangeEvent)
			part.Request = b
			if len(keys) == rows {
				part.PrimaryKeys = natsbus.KeysPB(keys[from:to])
			}
			out = append(out, part)
		}
		return out, nil
	case *milvuspb.DeleteRequest:
		if len(keys) == 0 {
			return []*eventspb.ChangeEvent{ev}, nil // a filter: one change, however long
		}
		per := max(len(keys)*maxChangeBytes/proto.Size(ev), 1)
		var out []*eventspb.ChangeEvent
		for from := 0; from < len(keys); from += per {
			to := min(from+per, len(keys))
			part := proto.Clone(ev).(*eventspb.ChangeEvent)
			part.PrimaryKeys = natsbus.KeysPB(keys[from:to])
			// The applier deletes by the keys; the request keeps only
			// what names the collection.
			b, err := proto.Marshal(&milvuspb.DeleteRequest{Base: m.GetBase(), DbName: m.GetDbName(), CollectionName: m.GetCollectionName(),
				PartitionName: m.GetPartitionName()})
			if err != nil {
				return nil, err
			}
			part.Request = b
			out = append(out, part)
		}
		return out, nil
	}
	return []*eventspb.ChangeEvent{ev}, nil
}
