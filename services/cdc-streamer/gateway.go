package streamer

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/zdm-io/zdm/pkg/milvusx"
	"github.com/zdm-io/zdm/pkg/registry"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// The gateway is a Milvus-protocol gRPC endpoint in front of one source
// cluster. It forwards every RPC to the source as raw bytes, whatever its
// method (including methods newer than the protos zdm was built with),
// with the client's metadata (authorization, database name) passed
// through, and reads a request only to decide whether a write is allowed
// (see policy.go). Nothing is decoded on the way back.

// frame is one message as bytes, never decoded.
type frame struct{ b []byte }

// rawCodec moves frames as they are.
type rawCodec struct{}

// Name is empty so requests to the source carry the plain content type
// application/grpc: Milvus 2.3 routes a connection to its gRPC server only
// on that exact value (application/grpc+proto goes to its HTTP server).
func (rawCodec) Name() string { return "" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	f, ok := v.(*frame)
	if !ok {
		return nil, status.Errorf(codes.Internal, "gateway codec: %T is not a frame", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(f.b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	f, ok := v.(*frame)
	if !ok {
		return status.Errorf(codes.Internal, "gateway codec: %T is not a frame", v)
	}
	f.b = data.Materialize() // a copy: data is reused once this returns
	return nil
}

// gateway forwards Milvus RPCs to a cluster: the gateway proper to the
// fronted cluster (or the target it switched over to), capturing writes;
// the target view to a syncing migration's target, refusing writes.
type gateway struct {
	src     *sourceClient
	capture *capture // nil for the target view
	// check returns nil when a call of method may go through, a *refusal
	// to answer in the reply, or a gRPC status error.
	check  func(method string) error
	server *grpc.Server
	log    *slog.Logger
}

// upstream is the connection to the source, opened at the first call: the
// cluster may be registered after the gateway starts.
type upstream struct {
	reg *registry.Registry
	id  string

	mu   sync.Mutex
	conn *grpc.ClientConn
}

// get returns the connection, resolving and dialling the cluster first if
// needed. Errors: UNAVAILABLE naming the cluster.
func (u *upstream) get(ctx context.Context) (*grpc.ClientConn, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.conn != nil {
		return u.conn, nil
	}
	conn, err := u.reg.Resolve(ctx, u.id)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "zdm gateway: cluster %q: %v; register it with zdm", u.id, err)
	}
	c, err := dialUpstream(conn)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "zdm gateway: cluster %q at %s: %v", u.id, conn.GetEndpoint(), err)
	}
	u.conn = c
	return c, nil
}

func (u *upstream) close() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.conn == nil {
		return nil
	}
	return u.conn.Close()
}

// dialUpstream opens the connection to the source the gateway forwards to:
// TLS where the cluster has it. The client's own credentials travel in
// its metadata; the registry's are not used.
func dialUpstream(conn *zdmpb.ClusterConnection) (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if conn.GetTls().GetEnabled() {
		host, _, err := net.SplitHostPort(conn.GetEndpoint())
		if err != nil {
			return nil, err
		}
		tc, err := milvusx.TLSConfig(conn, host)
		if err != nil {
			return nil, err
		}
		creds = credentials.NewTLS(tc)
	}
	return grpc.NewClient(conn.GetEndpoint(), grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{}), grpc.MaxCallRecvMsgSize(maxMessage), grpc.MaxCallSendMsgSize(maxMessage)))
}

// maxMessage is the largest message either way: Milvus takes inserts of
// up to 64 MiB and answers queries as large.
const maxMessage = 256 << 20

func newGateway(src *sourceClient, c *capture, check func(string) error, log *slog.Logger) *gateway {
	g := &gateway{src: src, capture: c, check: check, log: log}
	g.server = grpc.NewServer(grpc.UnknownServiceHandler(g.forward), grpc.ForceServerCodecV2(rawCodec{}),
		grpc.MaxRecvMsgSize(maxMessage), grpc.MaxSendMsgSize(maxMessage),
		// Milvus SDKs ping every few seconds, idle or not (milvus-sdk-go:
		// every 5 s); gRPC's default policy would answer with GOAWAY.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: time.Second, PermitWithoutStream: true}))
	return g
}

// serve accepts clients on lis until stop.
func (g *gateway) serve(lis net.Listener) error {
	if err := g.server.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

// stop lets calls in flight finish until ctx ends, then cuts them.
func (g *gateway) stop(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		g.server.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		g.server.Stop()
		<-done
	}
}

// forward relays one call of any method to the source: the client's
// messages up, the source's messages, headers and trailers down. The
// first request of a write is checked against the policy first; a refused
// write never reaches the source.
func (g *gateway) forward(_ any, ss grpc.ServerStream) error {
	method, ok := grpc.MethodFromServerStream(ss)
	if !ok {
		return status.Error(codes.Internal, "gateway: call without a method")
	}
	ctx := ss.Context()
	md, _ := metadata.FromIncomingContext(ctx)
	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(ctx, md.Copy()))
	defer cancel()

	first := &frame{}
	if err := ss.RecvMsg(first); err != nil {
		if errors.Is(err, io.EOF) {
			first = nil // a client stream that sent nothing
		} else {
			return err
		}
	}
	if first != nil {
		var refused *refusal
		if err := g.check(method); errors.As(err, &refused) {
			return refuse(ss, method, refused)
		} else if err != nil {
			return err
		}
	}
	if name := strings.TrimPrefix(method, milvusService); g.capture != nil && first != nil && captured[name] != nil {
		return g.capture.call(ss, method, name, first)
	}
	up, err := g.src.conn(ctx)
	if err != nil {
		return err
	}
	cs, err := up.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method)
	if err != nil {
		return err
	}
	sent := make(chan error, 1)
	go func() { sent <- g.pumpUp(ss, cs, first) }()
	down := g.pumpDown(ss, cs)
	if down != nil {
		cancel() // the client side is done with the call: stop sending up
	}
	if err := <-sent; err != nil && down == nil {
		return err
	}
	return down
}

// refuse answers a refused call as Milvus answers a failed one: the call
// succeeds and the reply's status says why not, with the refusal's gRPC
// code as its code (9 for FAILED_PRECONDITION) and the reason. Every reply of a write is a Status
// or carries one as its field 1.
func refuse(ss grpc.ServerStream, method string, r *refusal) error {
	//lint:ignore SA1019 clients of Milvus before 2.3 read only error_code.
	st, err := proto.Marshal(&commonpb.Status{ErrorCode: commonpb.ErrorCode_UnexpectedError,
		Code: int32(r.code), Reason: r.Error()})
	if err != nil {
		return err
	}
	reply := st
	if name := strings.TrimPrefix(method, milvusService); mutations[name] || name == "Import" {
		reply = protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), st)
	}
	return ss.SendMsg(&frame{b: reply})
}

// pumpUp sends first and then every further client message to the source,
// and closes the source's send side when the client's ends.
func (g *gateway) pumpUp(ss grpc.ServerStream, cs grpc.ClientStream, first *frame) error {
	if first != nil {
		if err := cs.SendMsg(first); err != nil {
			return nil // the source's answer, read by pumpDown, says why
		}
	}
	for {
		f := &frame{}
		if err := ss.RecvMsg(f); errors.Is(err, io.EOF) {
			return cs.CloseSend()
		} else if err != nil {
			return err
		}
		if err := cs.SendMsg(f); err != nil {
			return nil
		}
	}
}

// pumpDown relays the source's headers, messages and trailers to the
// client, and returns the source's final status.
func (g *gateway) pumpDown(ss grpc.ServerStream, cs grpc.ClientStream) error {
	headerSent := false
	for {
		f := &frame{}
		err := cs.RecvMsg(f)
		if !headerSent {
			if h, herr := cs.Header(); herr == nil && len(h) > 0 {
				if err := ss.SendHeader(h); err != nil {
					return err
				}
			}
			headerSent = true
		}
		if errors.Is(err, io.EOF) {
			ss.SetTrailer(cs.Trailer())
			return nil
		}
		if err != nil {
			ss.SetTrailer(cs.Trailer())
			return err // the source's status, as it sent it
		}
		if err := ss.SendMsg(f); err != nil {
			return err
		}
	}
}
