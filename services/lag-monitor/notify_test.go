package lagmonitor

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/zdm-io/zdm/pkg/milvusx"
	"github.com/zdm-io/zdm/pkg/natsbus"
	"github.com/zdm-io/zdm/pkg/verify"
	"github.com/zdm-io/zdm/pkg/ztest"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// receiver is a webhook endpoint that fails its first `fail` requests.
type receiver struct {
	mu     sync.Mutex
	fail   int
	tries  map[string]int // by notice, every request
	got    map[string]int // by notice, answered 200
	badSig int
}

func startReceiver(t *testing.T, secret string, fail int) (*receiver, string) {
	r := &receiver{fail: fail, tries: map[string]int{}, got: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		var body webhookBody
		_ = json.Unmarshal(b, &body)
		r.mu.Lock()
		defer r.mu.Unlock()
		key := body.MigrationID + "/" + body.Notice
		r.tries[key]++
		if req.Header.Get("X-Zdm-Signature") != Sign(secret, b) {
			r.badSig++
		}
		if r.tries[key] <= r.fail {
			http.Error(w, "not now", http.StatusServiceUnavailable)
			return
		}
		r.got[key]++
	}))
	t.Cleanup(srv.Close)
	return r, srv.URL
}

func (r *receiver) counts(key string) (tries, got int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tries[key], r.got[key]
}

// requests returns how many requests r has had, for every notice.
func (r *receiver) requests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, tries := range r.tries {
		n += tries
	}
	return n
}

// TestNotifications: every notice goes once to the emails (one message)
// and once to each webhook, signed; a webhook that fails twice gets its
// third try; a monitor that stops and another that starts send nothing
// twice; each delivery is recorded in the bucket.
func TestNotifications(t *testing.T) {
	bus, _ := ztest.Bus(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	box := ztest.StartMailServer(t, ztest.MailOptions{})
	smtpAddr := box.Addr
	ok, okURL := startReceiver(t, "s3cret", 0)
	flaky, flakyURL := startReceiver(t, "s3cret", 2)

	migrations, err := natsbus.OpenTable(ctx, bus.JS, natsbus.MigrationsBucket, "migration", 1, func() *zdmpb.Migration { return &zdmpb.Migration{} })
	require.NoError(t, err)
	notices, err := natsbus.NoticesBucket.Open(ctx, bus.JS, 1)
	require.NoError(t, err)
	now := time.Now()
	to := &zdmpb.Notifications{Emails: []string{"ops@example.com", "lead@example.com"}, WebhookUrls: []string{okURL, flakyURL}}
	put := func(m *zdmpb.Migration) {
		_, _, err := migrations.Upsert(ctx, m.GetMigrationId(), func(cur *zdmpb.Migration) error {
			proto.Reset(cur)
			proto.Merge(cur, m)
			return nil
		})
		require.NoError(t, err)
	}
	put(&zdmpb.Migration{MigrationId: "done", State: zdmpb.MigrationState_MIGRATION_STATE_COMPLETED, EndTime: timestamppb.New(now),
		SourceClusterId: "src", TargetClusterId: "tgt", TargetEndpoint: "tgt:19530", Options: &zdmpb.MigrationOptions{Notifications: to},
		Lag: &zdmpb.Lag{ThresholdReachedTime: timestamppb.New(now.Add(-time.Hour))}})
	put(&zdmpb.Migration{MigrationId: "old", State: zdmpb.MigrationState_MIGRATION_STATE_FAILED, EndTime: timestamppb.New(now.Add(-30 * 24 * time.Hour)),
		Options: &zdmpb.MigrationOptions{Notifications: to}})
	put(&zdmpb.Migration{MigrationId: "long", State: zdmpb.MigrationState_MIGRATION_STATE_SYNCING,
		Options: &zdmpb.MigrationOptions{Notifications: &zdmpb.Notifications{WebhookUrls: []string{okURL}}, MaxSyncDuration: durationpb.New(48 * time.Hour)},
		Stages:  []*zdmpb.Stage{{Kind: zdmpb.StageKind_STAGE_KIND_SYNC_INCREMENTAL, StartTime: timestamppb.New(now.Add(-25 * time.Hour))}}})

	var mu sync.Mutex
	var reports int
	start := func() context.CancelFunc {
		n := &notifier{cfg: Config{SMTPAddr: smtpAddr, SMTPFrom: "zdm@example.com", WebhookSecret: "s3cret"}, log: slog.Default(), tracer: noop.NewTracerProvider().Tracer(""),
			migrations: migrations, notices: natsbus.NoticesTable(notices), http: &http.Client{}, now: time.Now, retryBase: 200 * time.Millisecond,
			publish: func(context.Context, string, string, proto.Message) error {
				mu.Lock()
				reports++
				mu.Unlock()
				return nil
			}}
		rctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); n.run(rctx) }()
		return func() { stop(); <-done }
	}
	stop := start()
	ztest.Eventually(t, 20*time.Second, func() bool { _, got := ok.counts("done/COMPLETED"); return got == 1 }, "first webhook not delivered")
	// Another monitor takes over (the first stopped): nothing goes twice.
	stop()
	stop = start()
	defer stop()
	ztest.Eventually(t, 30*time.Second, func() bool {
		_, a := flaky.counts("done/COMPLETED")
		_, b := flaky.counts("done/LAG_THRESHOLD_REACHED")
		_, c := ok.counts("long/SYNC_EXPIRING")
		_, d := ok.counts("done/LAG_THRESHOLD_REACHED")
		return a == 1 && b == 1 && c == 1 && d == 1 && box.Count("completed") == 1 && box.Count("lag threshold reached") == 1
	}, "notices not all delivered")
	// Everything is delivered: a second round would send duplicates now.
	sent := func() [3]int { return [3]int{ok.requests(), flaky.requests(), len(box.Messages())} }
	before, after := sent(), sent()
	ztest.Consistently(t, time.Second, func() bool { after = sent(); return after == before },
		"sent again (webhook requests to the healthy and the flaky one, emails): %v, then %v", before, &after)
	for _, key := range []string{"done/COMPLETED", "done/LAG_THRESHOLD_REACHED"} {
		tries, got := ok.counts(key)
		require.Equal(t, [2]int{1, 1}, [2]int{tries, got}, "%s to the healthy webhook", key)
		tries, got = flaky.counts(key)
		require.Equal(t, [2]int{3, 1}, [2]int{tries, got}, "%s to the webhook failing twice: delivered on the third try", key)
	}
	require.Equal(t, 1, box.Count("Subject: [zdm] migration done: completed"))
	require.Equal(t, 1, box.Count("Subject: [zdm] migration done: lag threshold reached"))
	require.Equal(t, 2, box.Count("To: ops@example.com, lead@example.com"), "one message per notice, to every address")
	require.Equal(t, 2, box.Count("From: zdm <zdm@example.com>"), "no other message")
	require.Zero(t, box.Count("migration old"), "a migration that ended a month ago is not announced")
	tries, _ := ok.counts("long/SYNC_EXPIRING")
	require.Equal(t, 1, tries)
	require.Zero(t, ok.badSig+flaky.badSig, "every webhook body is signed")

	e, err := notices.Get(ctx, natsbus.NoticeKey("done", "COMPLETED", "webhook", 1))
	require.NoError(t, err)
	rec := &zdmpb.NotificationDelivery{}
	require.NoError(t, proto.Unmarshal(e.Value(), rec))
	require.True(t, rec.GetDelivered())
	require.Equal(t, int32(3), rec.GetAttempts())
	mu.Lock()
	require.GreaterOrEqual(t, reports, 9, "each attempt is reported to the coordinator")
	mu.Unlock()
}

// TestNotificationEmailSTARTTLS: the email goes through a server that
// requires STARTTLS and a PLAIN login, its certificate checked against
// --notify-smtp-ca-file; with the wrong CA it is not sent, and the
// delivery records why.
func TestNotificationEmailSTARTTLS(t *testing.T) {
	bus, _ := ztest.Bus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cert := ztest.SelfSigned(t)
	box := ztest.StartMailServer(t, ztest.MailOptions{TLS: cert.Server, User: "zdm", Password: "hunter2"})

	migrations, err := natsbus.OpenTable(ctx, bus.JS, natsbus.MigrationsBucket, "migration", 1, func() *zdmpb.Migration { return &zdmpb.Migration{} })
	require.NoError(t, err)
	notices, err := natsbus.NoticesBucket.Open(ctx, bus.JS, 1)
	require.NoError(t, err)
	m := &zdmpb.Migration{MigrationId: "m", State: zdmpb.MigrationState_MIGRATION_STATE_CANCELLED, EndTime: timestamppb.Now(),
		Options: &zdmpb.MigrationOptions{Notifications: &zdmpb.Notifications{Emails: []string{"ops@example.com"}}}}
	_, _, err = migrations.Upsert(ctx, "m", func(cur *zdmpb.Migration) error { proto.Merge(cur, m); return nil })
	require.NoError(t, err)

	cfg := Config{SMTPAddr: box.Addr, SMTPFrom: "zdm@example.com", SMTPUser: "zdm", SMTPPassword: "hunter2", SMTPStartTLS: true}
	n := &notifier{cfg: cfg, log: slog.Default(), tracer: noop.NewTracerProvider().Tracer(""), migrations: migrations, notices: natsbus.NoticesTable(notices), http: &http.Client{}, now: time.Now,
		retryBase: time.Hour, publish: func(context.Context, string, string, proto.Message) error { return nil }}
	// The system's CAs do not know the server's certificate.
	require.NoError(t, n.scan(ctx))
	e, err := notices.Get(ctx, natsbus.NoticeKey("m", "CANCELLED", "email", 0))
	require.NoError(t, err)
	rec := &zdmpb.NotificationDelivery{}
	require.NoError(t, proto.Unmarshal(e.Value(), rec))
	require.False(t, rec.GetDelivered())
	require.Contains(t, rec.GetLastError(), "certificate")
	require.Zero(t, box.Count("Subject:"))

	// With the CA it is trusted: delivered over TLS, logged in.
	require.NoError(t, notices.Delete(ctx, natsbus.NoticeKey("m", "CANCELLED", "email", 0)))
	n.cfg.SMTPCAFile = cert.CertFile
	require.NoError(t, n.cfg.Validate())
	require.NoError(t, n.scan(ctx))
	require.Equal(t, 1, box.Count("Subject: [zdm] migration m: cancelled"))
}

// TestDue: which notices a migration has earned.
func TestDue(t *testing.T) {
	now := time.Now()
	syncing := func(started time.Duration) *zdmpb.Migration {
		return &zdmpb.Migration{State: zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE,
			Lag:    &zdmpb.Lag{ThresholdReachedTime: timestamppb.New(now)},
			Stages: []*zdmpb.Stage{{Kind: zdmpb.StageKind_STAGE_KIND_SYNC_INCREMENTAL, StartTime: timestamppb.New(now.Add(-started))}}}
	}
	require.Equal(t, []string{noticeLag}, due(syncing(143*time.Hour), now), "more than a day left of the default 168h")
	require.Equal(t, []string{noticeLag, noticeExpiring}, due(syncing(144*time.Hour), now))
	require.Empty(t, due(&zdmpb.Migration{State: zdmpb.MigrationState_MIGRATION_STATE_SYNCING}, now))
	require.Equal(t, []string{noticeFailed}, due(&zdmpb.Migration{State: zdmpb.MigrationState_MIGRATION_STATE_FAILED, EndTime: timestamppb.New(now)}, now))
	require.Equal(t, 5*time.Second, retryAfter(5*time.Second, 1))
	require.Equal(t, 20*time.Second, retryAfter(5*time.Second, 3))
	require.Equal(t, 10*time.Minute, retryAfter(5*time.Second, 12))
}

// TestSettle: after a switchover, a range differs only when a key
// outside those written since differs; duplicates still count.
func TestSettle(t *testing.T) {
	k := func(i int64) milvusx.Key { return milvusx.Key{Int: i} }
	written := map[milvusx.Key]bool{k(7): true, k(8): true}
	r := &verify.Report{SourceCount: 10, SourceDistinct: 10, TargetCount: 12, TargetDistinct: 12,
		Mismatches: []verify.Mismatch{{Keys: []milvusx.Key{k(7), k(8)}}}}
	settle(r, written)
	require.True(t, r.Match(), r.String())

	r = &verify.Report{SourceCount: 10, SourceDistinct: 10, TargetCount: 11, TargetDistinct: 11,
		Mismatches: []verify.Mismatch{{Keys: []milvusx.Key{k(7), k(9)}}}}
	settle(r, written)
	require.False(t, r.Match(), "key 9 was not written after the switch")

	r = &verify.Report{SourceCount: 10, SourceDistinct: 10, TargetCount: 12, TargetDistinct: 11,
		Mismatches: []verify.Mismatch{{Keys: []milvusx.Key{k(7)}}}}
	settle(r, written)
	require.False(t, r.Match(), "a key twice on the target")
}
