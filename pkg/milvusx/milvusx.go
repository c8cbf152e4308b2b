// Package milvusx holds raw Milvus calls for the places where
// milvus-sdk-go v2.4.2 falls short, and the differences between Milvus
// servers that zdm meets (standalone Milvus, milvus-lite 2.5 and 3.x).
package milvusx

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"github.com/milvus-io/milvus-sdk-go/v2/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// IsUnreachable reports whether err says the server did not answer (as
// opposed to answering with an error): the connection failed or the call
// ran out of time.
func IsUnreachable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrConnect)
}

// CollectionNames lists the collections of the client's database. Unlike
// the SDK's ListCollections it does not pair names with collection IDs,
// which milvus-lite does not return (the SDK's list comes back empty there).
func CollectionNames(ctx context.Context, c client.Client) ([]string, error) {
	raw, err := Raw(c)
	if err != nil {
		return nil, err
	}
	resp, err := raw.ShowCollections(ctx, &milvuspb.ShowCollectionsRequest{})
	if err != nil {
		return nil, fmt.Errorf("show collections: %w", err)
	}
	if err := StatusError(resp.GetStatus()); err != nil {
		return nil, fmt.Errorf("show collections: %w", err)
	}
	return resp.GetCollectionNames(), nil
}

// Reply is any Milvus reply that carries a status.
type Reply interface{ GetStatus() *commonpb.Status }

// Check turns a call's transport error or failed reply into one error; nil
// when the call succeeded.
func Check(r Reply, err error) error {
	if err != nil {
		return err
	}
	return StatusError(r.GetStatus())
}

// CheckStatus is Check for calls that return only a status.
func CheckStatus(s *commonpb.Status, err error) error {
	if err != nil {
		return err
	}
	return StatusError(s)
}

// StatusError turns a failed Milvus status into an error; nil for success.
// Servers before Milvus 2.3 set only the deprecated error_code, newer ones
// code as well, so both are read.
func StatusError(s *commonpb.Status) error {
	//lint:ignore SA1019 older servers set only error_code.
	legacy := s.GetErrorCode()
	if s.GetCode() == 0 && legacy == commonpb.ErrorCode_Success {
		return nil
	}
	return fmt.Errorf("milvus error %d (%s): %s", s.GetCode(), legacy, s.GetReason())
}

// IsUnimplemented reports whether err says the server lacks the call, as
// milvus-lite does for some APIs. The SDK wraps some errors in ways that
// hide the gRPC status from errors.As, so the text is checked too.
func IsUnimplemented(err error) bool {
	if err == nil {
		return false
	}
	return status.Code(err) == codes.Unimplemented || strings.Contains(err.Error(), "code = Unimplemented")
}

// Partitions lists a collection's partitions; servers without partitions
// (milvus-lite 2.5) have none to list.
func Partitions(ctx context.Context, c milvuspb.MilvusServiceClient, db, name string) ([]string, error) {
	resp, err := c.ShowPartitions(ctx, &milvuspb.ShowPartitionsRequest{DbName: db, CollectionName: name})
	if IsUnimplemented(err) {
		return nil, nil
	}
	if err := Check(resp, err); err != nil {
		return nil, fmt.Errorf("show partitions of %s.%s: %w", db, name, err)
	}
	return resp.GetPartitionNames(), nil
}

// PagedPartitions are the partitions to page a collection by: each of its
// partitions, or just "" (all at once) when it has one partition or a
// partition key, where Milvus routes rows itself. Paging partition by
// partition also keeps pages in key order on servers that order a
// limited query's rows only within a partition (milvus-lite 3).
func PagedPartitions(ctx context.Context, c milvuspb.MilvusServiceClient, db, name string, schema *schemapb.CollectionSchema) ([]string, error) {
	for _, f := range schema.GetFields() {
		if f.GetIsPartitionKey() {
			return []string{""}, nil
		}
	}
	parts, err := Partitions(ctx, c, db, name)
	if err != nil || len(parts) <= 1 {
		return []string{""}, err
	}
	return parts, nil
}

// EnsureLoaded loads collection db.name if it is not loaded and waits
// until it is, polling every 200 ms until ctx ends. Milvus queries only
// loaded collections, and a server that restarts can come back with its
// collections released (milvus-lite 3 does).
func EnsureLoaded(ctx context.Context, c milvuspb.MilvusServiceClient, db, name string) error {
	requested := false
	for {
		st, err := c.GetLoadState(ctx, &milvuspb.GetLoadStateRequest{DbName: db, CollectionName: name})
		if err := Check(st, err); err != nil {
			return fmt.Errorf("load state of %s.%s: %w", db, name, err)
		}
		switch st.GetState() {
		case commonpb.LoadState_LoadStateLoaded:
			return nil
		case commonpb.LoadState_LoadStateNotLoad:
			if !requested {
				if err := CheckStatus(c.LoadCollection(ctx, &milvuspb.LoadCollectionRequest{DbName: db, CollectionName: name})); err != nil {
					return fmt.Errorf("load %s.%s: %w", db, name, err)
				}
				requested = true
				continue
			}
		case commonpb.LoadState_LoadStateLoading:
		default:
			return fmt.Errorf("collection %s.%s cannot be loaded: %s", db, name, st.GetState())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("load %s.%s: %w", db, name, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// LoadLikeSource loads on tgt every user collection that is loaded (or
// loading) on src and exists on tgt, and waits until they are: a
// migration copies into released collections and loads them once the copy
// is over, before anything reads the target. A collection the target does
// not have yet (created on the source since the copy was planned) comes
// with the captured DDL that creates and loads it.
func LoadLikeSource(ctx context.Context, src, tgt *Client) error {
	names, err := UserCollections(ctx, src)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	have, err := UserCollections(ctx, tgt)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	for _, c := range names {
		db, name, _ := strings.Cut(c, ".")
		st, err := src.Raw.GetLoadState(ctx, &milvuspb.GetLoadStateRequest{DbName: db, CollectionName: name})
		if err := Check(st, err); err != nil {
			return fmt.Errorf("load state of %s on the source: %w", c, err)
		}
		if st.GetState() != commonpb.LoadState_LoadStateLoaded && st.GetState() != commonpb.LoadState_LoadStateLoading {
			continue
		}
		if !slices.Contains(have, c) {
			continue
		}
		if err := EnsureLoaded(ctx, tgt.Raw, db, name); err != nil {
			return fmt.Errorf("target: %w", err)
		}
	}
	return nil
}
