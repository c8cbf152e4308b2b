package milvusx_test

import (
	"testing"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/stretchr/testify/require"

	"github.com/zdm-io/zdm/pkg/milvusx"
)

func TestStatusError(t *testing.T) {
	require.NoError(t, milvusx.StatusError(nil))
	require.NoError(t, milvusx.StatusError(&commonpb.Status{}))
	require.ErrorContains(t, milvusx.StatusError(&commonpb.Status{Code: 100, Reason: "collection not found"}), "collection not found")
	// Older servers fill only the deprecated error_code.
	//lint:ignore SA1019 the field under test.
	legacy := &commonpb.Status{ErrorCode: commonpb.ErrorCode_UnexpectedError, Reason: "legacy failure"}
	require.ErrorContains(t, milvusx.StatusError(legacy), "legacy failure")
}
