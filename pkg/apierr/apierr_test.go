package apierr_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zdm-io/zdm/pkg/apierr"
)

func TestStatus(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code codes.Code
		msg  string
		ok   bool
	}{
		{fmt.Errorf("%w: migration m1 not found", apierr.ErrNotFound), codes.NotFound, "not found: migration m1 not found", true},
		{fmt.Errorf("cluster c1: %w", fmt.Errorf("%w: locked by m2", apierr.ErrFailedPrecondition)), codes.FailedPrecondition, "cluster c1: failed precondition: locked by m2", true},
		{fmt.Errorf("wait: %w", context.DeadlineExceeded), codes.DeadlineExceeded, "wait: context deadline exceeded", true},
		{status.Error(codes.Unimplemented, "later"), codes.Unimplemented, "later", true},
		{errors.New("kv: connection to 10.0.0.1 reset"), codes.Internal, "internal error; see the zdm server log", false},
	} {
		st, ok := apierr.Status(tc.err)
		require.Equal(t, tc.ok, ok, tc.err.Error())
		s := status.Convert(st)
		require.Equal(t, tc.code, s.Code(), tc.err.Error())
		require.Equal(t, tc.msg, s.Message(), tc.err.Error())
	}
	st, ok := apierr.Status(nil)
	require.NoError(t, st)
	require.True(t, ok)
}
