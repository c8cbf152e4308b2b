package streamer

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"

	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/zdm-io/zdm/pkg/milvusx"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
)

// captured lists the calls the gateway captures while armed, by method
// name, with the message each request decodes into. Mutations change
// rows; the rest is the DDL a ZERO_DOWNTIME migration carries over, load
// state included, so the target serves what the source serves.
var captured = map[string]func() proto.Message{
	"Insert":            func() proto.Message { return &milvuspb.InsertRequest{} },
	"Upsert":            func() proto.Message { return &milvuspb.UpsertRequest{} },
	"Delete":            func() proto.Message { return &milvuspb.DeleteRequest{} },
	"CreateDatabase":    func() proto.Message { return &milvuspb.CreateDatabaseRequest{} },
	"DropDatabase":      func() proto.Message { return &milvuspb.DropDatabaseRequest{} },
	"CreateCollection":  func() proto.Message { return &milvuspb.CreateCollectionRequest{} },
	"DropCollection":    func() proto.Message { return &milvuspb.DropCollectionRequest{} },
	"CreatePartition":   func() proto.Message { return &milvuspb.CreatePartitionRequest{} },
	"DropPartition":     func() proto.Message { return &milvuspb.DropPartitionRequest{} },
	"CreateIndex":       func() proto.Message { return &milvuspb.CreateIndexRequest{} },
	"DropIndex":         func() proto.Message { return &milvuspb.DropIndexRequest{} },
	"AlterIndex":        func() proto.Message { return &milvuspb.AlterIndexRequest{} },
	"LoadCollection":    func() proto.Message { return &milvuspb.LoadCollectionRequest{} },
	"ReleaseCollection": func() proto.Message { return &milvuspb.ReleaseCollectionRequest{} },
	"LoadPartitions":    func() proto.Message { return &milvuspb.LoadPartitionsRequest{} },
	"ReleasePartitions": func() proto.Message { return &milvuspb.ReleasePartitionsRequest{} },
}

// request is what the gateway reads of a captured call.
type request struct {
	name                 string // method name without the service
	msg                  proto.Message
	database, collection string
	partition            string
	op                   eventspb.Operation
}

// named is what every captured request has; partitions only some.
type named interface {
	GetDbName() string
}

// decodeRequest reads a captured call's request. The database is the
// request's, else the client's "dbname" metadata (how the SDKs name it),
// else the default one.
func decodeRequest(name string, b []byte, md metadata.MD) (*request, error) {
	msg := captured[name]()
	if err := proto.Unmarshal(b, msg); err != nil {
		return nil, fmt.Errorf("decode %s request: %w", name, err)
	}
	r := &request{name: name, msg: msg, op: eventspb.Operation_OPERATION_DDL}
	if n, ok := msg.(named); ok {
		r.database = n.GetDbName()
	}
	if r.database == "" {
		if v := md.Get("dbname"); len(v) > 0 && v[0] != "" {
			r.database = v[0]
		} else {
			r.database = milvusx.DefaultDatabase
		}
	}
	if c, ok := msg.(interface{ GetCollectionName() string }); ok {
		r.collection = c.GetCollectionName()
	}
	if p, ok := msg.(interface{ GetPartitionName() string }); ok {
		r.partition = p.GetPartitionName()
	}
	switch name {
	case "Insert":
		r.op = eventspb.Operation_OPERATION_INSERT
	case "Upsert":
		r.op = eventspb.Operation_OPERATION_UPSERT
	case "Delete":
		r.op = eventspb.Operation_OPERATION_DELETE
	}
	return r, nil
}

// fields are the columns of an insert or upsert; nil otherwise.
func (r *request) fields() []*schemapb.FieldData {
	switch m := r.msg.(type) {
	case *milvuspb.InsertRequest:
		return m.GetFieldsData()
	case *milvuspb.UpsertRequest:
		return m.GetFieldsData()
	}
	return nil
}

// keysOf returns the primary keys a mutation names before it is sent:
// the key column of an insert or upsert (none for an auto-ID insert), the
// keys of a delete whose filter is `pk in [...]` or `pk == v`. ok is
// false when the keys cannot be known in advance (a delete by any other
// filter): the whole collection is then locked.
func (r *request) keysOf(pk *schemapb.FieldSchema) (keys []milvusx.Key, ok bool) {
	switch m := r.msg.(type) {
	case *milvuspb.InsertRequest, *milvuspb.UpsertRequest:
		for _, f := range r.fields() {
			if f.GetFieldName() == pk.GetName() {
				k, err := milvusx.PKValues([]*schemapb.FieldData{f}, pk)
				return k, err == nil
			}
		}
		return nil, true // auto-ID: keys are new
	case *milvuspb.DeleteRequest:
		return parseKeyFilter(m.GetExpr(), pk)
	}
	return nil, false
}

// parseKeyFilter reads the keys of a filter `pk in [k1, k2, ...]` or
// `pk == k`; ok is false for any other filter.
func parseKeyFilter(expr string, pk *schemapb.FieldSchema) ([]milvusx.Key, bool) {
	s := strings.TrimSpace(expr)
	rest, ok := strings.CutPrefix(s, pk.GetName())
	if !ok {
		return nil, false
	}
	rest = strings.TrimSpace(rest)
	var list string
	switch {
	case strings.HasPrefix(rest, "=="):
		list = strings.TrimSpace(rest[2:])
	case strings.HasPrefix(rest, "in") && len(rest) > 2 && (rest[2] == '[' || unicode.IsSpace(rune(rest[2]))):
		inner := strings.TrimSpace(rest[2:])
		if !strings.HasPrefix(inner, "[") || !strings.HasSuffix(inner, "]") {
			return nil, false
		}
		list = inner[1 : len(inner)-1]
	default:
		return nil, false
	}
	isStr := pk.GetDataType() == schemapb.DataType_VarChar
	var keys []milvusx.Key
	for tok := range strings.SplitSeq(list, ",") {
		tok = strings.TrimSpace(tok)
		if tok == "" {
			continue
		}
		if isStr {
			// A quoted string without quotes, commas or escapes inside.
			if len(tok) < 2 || (tok[0] != '"' && tok[0] != '\'') || tok[len(tok)-1] != tok[0] {
				return nil, false
			}
			body := tok[1 : len(tok)-1]
			if strings.ContainsAny(body, `"'\`) {
				return nil, false
			}
			keys = append(keys, milvusx.Key{Str: body, IsStr: true})
			continue
		}
		v, err := strconv.ParseInt(tok, 10, 64)
		if err != nil {
			return nil, false
		}
		keys = append(keys, milvusx.Key{Int: v})
	}
	if len(keys) == 0 {
		return nil, false
	}
	return keys, true
}

// replyKeys are the keys in a mutation's reply (auto-generated ones
// included; Milvus 2.3 returns none for a delete).
func replyKeys(ids *schemapb.IDs) []milvusx.Key {
	var out []milvusx.Key
	for _, v := range ids.GetIntId().GetData() {
		out = append(out, milvusx.Key{Int: v})
	}
	for _, v := range ids.GetStrId().GetData() {
		out = append(out, milvusx.Key{Str: v, IsStr: true})
	}
	return out
}
