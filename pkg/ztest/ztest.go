package ztest

import (
	"os"
	"strconv"
	"testing"
	"time"
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

// Eventually polls cond every 50 ms until it holds, failing t with msg
// (formatted with args) when it has not within timeout. Call it from the
// test's goroutine.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: "+msg, append([]any{timeout}, args...)...)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Consistently polls cond every 50 ms for period, from the first poll at
// once to the last at or after period's end, and fails t with msg
// (formatted with args) as soon as cond does not hold: the bounded way to
// check that something stays so, or that something does not happen, for a
// while. Call it from the test's goroutine.
func Consistently(t testing.TB, period time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	start := time.Now()
	end := start.Add(period)
	for {
		if !cond() {
			t.Fatalf("after %s of %s: "+msg, append([]any{time.Since(start).Round(time.Millisecond), period}, args...)...)
		}
		if !time.Now().Before(end) {
			return
		}
		time.Sleep(min(50*time.Millisecond, time.Until(end)))
	}
}
