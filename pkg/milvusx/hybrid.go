package milvusx

import "time"

// logicalBits is how many low bits of a Milvus hybrid timestamp count
// within one millisecond; the rest is Unix time in milliseconds.
const logicalBits = 18

// HybridTime is t as a Milvus hybrid timestamp with logical part 0.
func HybridTime(t time.Time) uint64 { return uint64(t.UnixMilli()) << logicalBits }

// PhysicalTime is the wall time of a Milvus hybrid timestamp.
func PhysicalTime(ts uint64) time.Time { return time.UnixMilli(int64(ts >> logicalBits)) }
