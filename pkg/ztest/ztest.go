package ztest

import (
	"os"
	"strconv"
	"testing"
)

// InCI reports whether tests run in CI (CI set to a true value).
func InCI() bool {
	v, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && v
}

// Integration skips t in -short runs, which are unit-only.
func Integration(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: skipped with -short")
	}
}

// Missing ends t because a real server it needs is absent: a failure in CI,
// a skip elsewhere.
func Missing(t testing.TB, what string) {
	t.Helper()
	msg := what + " is not available; start the test rig with `make testenv-up` and `source .testenv/env`"
	if InCI() {
		t.Fatal(msg)
	}
	t.Skip(msg)
}
