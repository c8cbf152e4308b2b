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
	"github.com/zdm-io/zdm/pkg/registry"
)

// sourceClient is the gateway's link to the cluster it forwards to: the
// fronted cluster, or, once a migration from it switched over, that
// migration's target. For each cluster it keeps the raw connection
// clients' calls are relayed on, and a client of its own, with the
// registry's credentials, for what the gateway asks itself (timestamps,
// a collection's primary key). Connections are kept until close, so a
// call in flight on the old cluster ends normally after a switch.
type sourceClient struct {
	reg *registry.Registry

	mu      sync.Mutex
	cluster string // where calls go now
	ups     map[string]*upstream
	owns    map[string]*milvusx.Client
}

func newSourceClient(reg *registry.Registry, cluster string) *sourceClient {
	return &sourceClient{reg: reg, cluster: cluster, ups: map[string]*upstream{}, owns: map[string]*milvusx.Client{}}
}

// use sends every call from now on to cluster.
func (s *sourceClient) use(cluster string) {
	s.mu.Lock()
	s.cluster = cluster
	s.mu.Unlock()
}

// current is the cluster calls go to.
func (s *sourceClient) current() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cluster
}

func (s *sourceClient) upstream(cluster string) *upstream {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.ups[cluster]
	if u == nil {
		u = &upstream{reg: s.reg, id: cluster}
		s.ups[cluster] = u
	}
	return u
}

// conn returns the connection to the cluster calls go to now.
func (s *sourceClient) conn(ctx context.Context) (*grpc.ClientConn, error) {
	return s.upstream(s.current()).get(ctx)
}

// prepare dials cluster ahead of a switch to it, so the first call there
// does not wait for a connection.
func (s *sourceClient) prepare(ctx context.Context, cluster string) error {
	c, err := s.upstream(cluster).get(ctx)
	if err != nil {
		return err
	}
	c.Connect()
	return nil
}

func (s *sourceClient) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, c := range s.owns {
		errs = append(errs, c.Close())
	}
	for _, u := range s.ups {
		errs = append(errs, u.close())
	}
	return errors.Join(errs...)
}

func (s *sourceClient) client(ctx context.Context) (*milvusx.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.owns[s.cluster]; c != nil {
		return c, nil
	}
	conn, err := s.reg.Resolve(ctx, s.cluster)
	if err != nil {
		return nil, fmt.Errorf("cluster %q: %w", s.cluster, err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := milvusx.Open(cctx, conn, "")
	if err != nil {
		return nil, fmt.Errorf("cluster %q: %w", s.cluster, err)
	}
	s.owns[s.cluster] = c
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
	conn, err := s.conn(ctx)
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
