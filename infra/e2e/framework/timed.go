package framework

import (
	"context"
	"testing"
	"time"

	"example.com/grpc-metrics/infra/proctest"
)

// TimedTarget polls cond every interval until it holds (the test fails
// after a minute), logs how long after since it did, and fails the test
// when that is longer than target.
func TimedTarget(t *testing.T, what string, since time.Time, interval, target time.Duration, cond func(context.Context) (bool, string)) {
	t.Helper()
	if err := proctest.Poll(t.Context(), interval, time.Minute, what, cond); err != nil {
		t.Fatal(err)
	}
	took := time.Since(since)
	t.Logf("%s: %.2fs (target %v)", what, took.Seconds(), target)
	if took > target {
		t.Errorf("%s: %v, want at most %v", what, took, target)
	}
}
