package streamer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/zdm-io/zdm/pkg/milvusx"
)

// sourceClient is the gateway's link to its source: the raw connection
// clients' calls are relayed on, and a client of its own, with the
// registry's credentials, for what the gateway asks itself (timestamps,
// a collection's primary key).
type sourceClient struct {
	up *upstream

	mu  sync.Mutex
	own *milvusx.Client
}

func (s *sourceClient) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	if s.own != nil {
		err = s.own.Close()
	}
	return errors.Join(err, s.up.close())
}

func (s *sourceClient) client(ctx context.Context) (*milvusx.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.own != nil {
		return s.own, nil
	}
	conn, err := s.up.reg.Resolve(ctx, s.up.id)
	if err != nil {
		return nil, fmt.Errorf("cluster %q: %w", s.up.id, err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := milvusx.Open(cctx, conn, "")
	if err != nil {
		return nil, fmt.Errorf("cluster %q: %w", s.up.id, err)
	}
	s.own = c
	return c, nil
}

// timestamp allocates a timestamp on the source; on a server without
// AllocTimestamp (milvus-lite) it is the clock's, in Milvus's hybrid
// form.
func (s *sourceClient) timestamp(ctx context.Context) (uint64, error) {
	c, err := s.client(ctx)
	if err != nil {
		return 0, err
	}
	ts, err := milvusx.ReadTimestamp(ctx, c.Raw)
	if err != nil {
		return 0, err
	}
	if ts == 0 {
		ts = milvusx.HybridTime(time.Now())
	}
	return ts, nil
}

// primaryKey returns the primary key field of database.collection.
func (s *sourceClient) primaryKey(ctx context.Context, database, collection string) (*schemapb.FieldSchema, error) {
	c, err := s.client(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "zdm gateway: %v", err)
	}
	resp, err := c.Raw.DescribeCollection(ctx, &milvuspb.DescribeCollectionRequest{DbName: database, CollectionName: collection})
	if err := milvusx.Check(resp, err); err != nil {
		// The write itself would fail the same way: let the source say so.
		return nil, nil
	}
	for _, f := range resp.GetSchema().GetFields() {
		if f.GetIsPrimaryKey() {
			return f, nil
		}
	}
	return nil, nil
}

// relay sends one unary call to the source and its reply back to the
// client; onReply, when set, sees the reply first and may fail the call
// instead. Headers and trailers go through as the source sent them.
func (s *sourceClient) relay(ss grpc.ServerStream, method string, req *frame, md metadata.MD, onReply func([]byte) error) error {
	ctx := ss.Context()
	conn, err := s.up.get(ctx)
	if err != nil {
		return err
	}
	var header, trailer metadata.MD
	reply := &frame{}
	err = conn.Invoke(metadata.NewOutgoingContext(ctx, md.Copy()), method, req, reply, grpc.Header(&header), grpc.Trailer(&trailer))
	if len(header) > 0 {
		if herr := ss.SendHeader(header); herr != nil {
			return herr
		}
	}
	ss.SetTrailer(trailer)
	if err != nil {
		return err // the source's status, as it sent it
	}
	if onReply != nil {
		if err := onReply(reply.b); err != nil {
			return err
		}
	}
	return ss.SendMsg(reply)
}
