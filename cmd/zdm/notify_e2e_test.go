package main_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/zdm-io/zdm/pkg/natsbus"
	"github.com/zdm-io/zdm/pkg/ztest"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
	lagmonitor "github.com/zdm-io/zdm/services/lag-monitor"
)

// messageIDs counts the messages of s by Message-ID.
func messageIDs(s *ztest.MailServer) map[string]int {
	re := regexp.MustCompile(`Message-ID: <([^>]+)>`)
	out := map[string]int{}
	for _, m := range s.Messages() {
		if id := re.FindStringSubmatch(m); id != nil {
			out[id[1]]++
		}
	}
	return out
}

// TestE2ENotificationsAcrossKill: the lag-monitor process is killed with
// -9 while a webhook is being delivered, and started again. Every notice
// reaches each recipient once: the one whose delivery the kill cut short
// is sent again, with the same X-Zdm-Delivery (the receiver drops the
// repeat by it, as docs/operations.md asks); nothing else is repeated.
// Every body is signed.
func TestE2ENotificationsAcrossKill(t *testing.T) {
	ztest.Integration(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bus, nats := ztest.Bus(t)

	sink := ztest.StartMailServer(t, ztest.MailOptions{})

	var mu sync.Mutex
	var monitor *binaryProcess
	requests := map[string]int{} // by X-Zdm-Delivery
	badSig, killed := 0, false
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		var body struct{ Notice string }
		_ = json.Unmarshal(b, &body)
		mu.Lock()
		defer mu.Unlock()
		requests[req.Header.Get("X-Zdm-Delivery")]++
		if req.Header.Get("X-Zdm-Signature") != lagmonitor.Sign("s3cret", b) {
			badSig++
		}
		if body.Notice == "COMPLETED" && !killed {
			// The monitor dies with this delivery in flight.
			killed = true
			_ = monitor.cmd.Process.Kill()
			<-monitor.exit
		}
	}))
	t.Cleanup(hook.Close)

	migrations, err := natsbus.OpenTable(ctx, bus.JS, natsbus.MigrationsBucket, "migration", 1, func() *zdmpb.Migration { return &zdmpb.Migration{} })
	require.NoError(t, err)
	now := time.Now()
	_, _, err = migrations.Upsert(ctx, "n1", func(m *zdmpb.Migration) error {
		proto.Merge(m, &zdmpb.Migration{MigrationId: "n1", State: zdmpb.MigrationState_MIGRATION_STATE_COMPLETED, EndTime: timestamppb.New(now),
			SourceClusterId: "src", TargetClusterId: "tgt", Lag: &zdmpb.Lag{ThresholdReachedTime: timestamppb.New(now.Add(-time.Minute))},
			Options: &zdmpb.MigrationOptions{Notifications: &zdmpb.Notifications{Emails: []string{"ops@example.com"}, WebhookUrls: []string{hook.URL}}}})
		return nil
	})
	require.NoError(t, err)

	start := func() *binaryProcess {
		return startBinary(t, "-target", "lag-monitor", "-nats-url", nats.ClientURL(), "-grpc-addr", freeAddr(t), "-metrics-addr", "127.0.0.1:0",
			"-notify-smtp-addr", sink.Addr, "-notify-smtp-starttls=false", "-notify-webhook-secret", "s3cret")
	}
	mu.Lock()
	monitor = start()
	mu.Unlock()
	ztest.Eventually(t, 30*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return killed }, "no webhook delivery reached the receiver")
	mu.Lock()
	monitor = start()
	mu.Unlock()

	notices, err := natsbus.NoticesBucket.Open(ctx, bus.JS, 1)
	require.NoError(t, err)
	delivered := func(notice, channel string) bool {
		e, err := notices.Get(ctx, natsbus.NoticeKey("n1", notice, channel, 0))
		if err != nil {
			return false
		}
		rec := &zdmpb.NotificationDelivery{}
		return proto.Unmarshal(e.Value(), rec) == nil && rec.GetDelivered()
	}
	ztest.Eventually(t, time.Minute, func() bool {
		return delivered("COMPLETED", "webhook") && delivered("COMPLETED", "email") &&
			delivered("LAG_THRESHOLD_REACHED", "webhook") && delivered("LAG_THRESHOLD_REACHED", "email")
	}, "notices not all delivered after the restart")
	// Every delivery is recorded after it was made: a repeat would arrive now.
	sent := func() [2]int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, tries := range requests {
			n += tries
		}
		return [2]int{n, len(sink.Messages())}
	}
	before, after := sent(), sent()
	ztest.Consistently(t, 2*time.Second, func() bool { after = sent(); return after == before },
		"sent again (webhook requests, emails): %v, then %v", before, &after)

	mu.Lock()
	defer mu.Unlock()
	require.Zero(t, badSig, "every webhook body is signed")
	require.Len(t, requests, 2, "one delivery ID per notice: %v", requests)
	require.Equal(t, 2, requests[natsbus.NoticeKey("n1", "COMPLETED", "webhook", 0)], "the delivery the kill cut short is sent again, with its ID")
	require.Equal(t, 1, requests[natsbus.NoticeKey("n1", "LAG_THRESHOLD_REACHED", "webhook", 0)])
	ids := messageIDs(sink)
	require.Len(t, ids, 2, "one email per notice: %v", ids)
	for id, n := range ids {
		require.Equal(t, 1, n, "email %s", id)
	}
}
