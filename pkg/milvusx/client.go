package milvusx

import (
	"context"
	"errors"
	"fmt"

	grpc_retry "github.com/grpc-ecosystem/go-grpc-middleware/retry"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-sdk-go/v2/client"
	"google.golang.org/grpc"

	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// Client is an SDK client together with the generated Milvus service stub
// on the same connection, for the calls the SDK lacks or gets wrong. Every
// method of client.Client is promoted, so a *Client goes wherever a
// client.Client does (and Raw of it returns its stub); Close closes the
// one connection both use. Like the SDK client, it is safe for concurrent
// use. Get one from Open, or from Wrap for an SDK client you already hold;
// a Client built otherwise may carry a stub that retries differently.
type Client struct {
	client.Client
	// Raw is the stub behind Client, as Raw returns it: the client's
	// interceptors apply, and a server that does not answer is tried only
	// rawAttempts times.
	Raw milvuspb.MilvusServiceClient
}

// Open connects to the cluster described by conn, using database db (""
// for the default), and returns the client with its stub. It blocks until
// connected or ctx ends. Errors are Connect's: a cluster that cannot be
// reached wraps ErrConnect, and no error contains the credentials.
func Open(ctx context.Context, conn *zdmpb.ClusterConnection, db string) (*Client, error) {
	c, err := Connect(ctx, conn, db)
	if err != nil {
		return nil, err
	}
	mc, err := Wrap(c)
	if err != nil {
		return nil, errors.Join(err, c.Close())
	}
	return mc, nil
}

// Wrap bundles an SDK client with its stub; a *Client comes back as it is.
// The result shares c's connection: closing either closes both, and c
// stays the caller's to close if Wrap fails. It fails only for a client
// without a stub: one that is not the SDK's gRPC client (a fake), or one
// already closed.
func Wrap(c client.Client) (*Client, error) {
	if mc, ok := c.(*Client); ok && mc != nil {
		return mc, nil
	}
	raw, err := Raw(c)
	if err != nil {
		return nil, err
	}
	return &Client{Client: c, Raw: raw}, nil
}

// Raw returns the generated Milvus service stub behind an SDK client, or a
// Client's own stub; the client's interceptors (database name,
// credentials) still apply. Its calls try a server that does not answer
// rawAttempts times, within about a second, where the SDK's own calls try
// six times over some 20 seconds: zdm retries its work itself, with
// backoff, and shows a cluster that is down as soon as a call fails. It
// fails for a client without a stub, as Wrap does. Code that needs both
// the client and the stub should hold a Client instead.
func Raw(c client.Client) (milvuspb.MilvusServiceClient, error) {
	if mc, ok := c.(*Client); ok && mc != nil {
		if mc.Raw != nil {
			return mc.Raw, nil
		}
		c = mc.Client
	}
	g, ok := c.(*client.GrpcClient)
	if !ok || g.Conn == nil {
		return nil, fmt.Errorf("milvus client %T has no raw service stub", c)
	}
	return milvuspb.NewMilvusServiceClient(fewerRetries{g.Conn}), nil
}

// rawAttempts is how many times a raw call tries a server that answers
// UNAVAILABLE.
const rawAttempts = 3

// fewerRetries lowers the SDK's retry count for every call on a connection.
type fewerRetries struct{ grpc.ClientConnInterface }

func (c fewerRetries) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return c.ClientConnInterface.Invoke(ctx, method, args, reply, append(opts, grpc_retry.WithMax(rawAttempts))...)
}
