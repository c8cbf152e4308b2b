// Package apierr maps zdm's errors to gRPC status codes in one place. Code
// deep in a service wraps one of the sentinels here with %w and a message
// for the caller; the server's interceptor converts it once, at the
// boundary. Anything else becomes INTERNAL with a generic message, and is
// logged there with its detail, so internals never leak to callers.
package apierr

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sentinels, one per gRPC code that zdm returns on purpose.
var (
	ErrInvalidArgument    = errors.New("invalid argument")
	ErrNotFound           = errors.New("not found")
	ErrAlreadyExists      = errors.New("already exists")
	ErrFailedPrecondition = errors.New("failed precondition")
	ErrOutOfRange         = errors.New("out of range")
	ErrUnauthenticated    = errors.New("unauthenticated")
	ErrPermissionDenied   = errors.New("permission denied")
	ErrUnavailable        = errors.New("unavailable")
)

var codeOf = []struct {
	err  error
	code codes.Code
}{
	{ErrInvalidArgument, codes.InvalidArgument},
	{ErrNotFound, codes.NotFound},
	{ErrAlreadyExists, codes.AlreadyExists},
	{ErrFailedPrecondition, codes.FailedPrecondition},
	{ErrOutOfRange, codes.OutOfRange},
	{ErrUnauthenticated, codes.Unauthenticated},
	{ErrPermissionDenied, codes.PermissionDenied},
	{ErrUnavailable, codes.Unavailable},
}

// Status converts err to a gRPC status error: a sentinel's code with err's
// message, the context's own code when it ended, an existing status as it
// is, and INTERNAL otherwise. ok is false for INTERNAL.
func Status(err error) (st error, ok bool) {
	if err == nil {
		return nil, true
	}
	for _, c := range codeOf {
		if errors.Is(err, c.err) {
			return status.Error(c.code, err.Error()), true
		}
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error()), true
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error()), true
	}
	if s, isStatus := status.FromError(err); isStatus {
		return s.Err(), s.Code() != codes.Internal && s.Code() != codes.Unknown
	}
	return status.Error(codes.Internal, "internal error; see the zdm server log"), false
}

// UnaryServerInterceptor converts handler errors with Status, logging the
// ones that become INTERNAL.
func UnaryServerInterceptor(logger *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		resp, err := h(ctx, req)
		if err == nil {
			return resp, nil
		}
		st, ok := Status(err)
		if !ok {
			logger.ErrorContext(ctx, "internal error", slog.String("method", info.FullMethod), slog.Any("error", err))
		}
		return nil, st
	}
}

// StreamServerInterceptor is UnaryServerInterceptor for streams.
func StreamServerInterceptor(logger *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		err := h(srv, ss)
		if err == nil {
			return nil
		}
		st, ok := Status(err)
		if !ok {
			logger.ErrorContext(ss.Context(), "internal error", slog.String("method", info.FullMethod), slog.Any("error", err))
		}
		return st
	}
}
