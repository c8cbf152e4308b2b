package lagmonitor

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/zdm-io/zdm/pkg/apierr"
	"github.com/zdm-io/zdm/pkg/natsbus"
	"github.com/zdm-io/zdm/pkg/stage"
	"github.com/zdm-io/zdm/pkg/telemetry"
	"github.com/zdm-io/zdm/pkg/verify"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// Config configures the lag monitor's notifications and repairs.
type Config struct {
	// SMTPAddr is the mail server, host:port; empty sends no email.
	SMTPAddr string
	// SMTPFrom is the sender address.
	SMTPFrom string
	// SMTPUser and SMTPPassword log in with PLAIN when set.
	SMTPUser, SMTPPassword string
	// SMTPStartTLS upgrades the connection with STARTTLS (required when
	// set). Default true.
	SMTPStartTLS bool
	// SMTPCAFile is a PEM file of the CAs the SMTP server's certificate
	// is checked against; empty uses the system's.
	SMTPCAFile string
	// WebhookSecret keys the X-Zdm-Signature HMAC of webhook bodies.
	WebhookSecret string
	// RepairMaxDeleteShare is the largest share (0 to 1) of a key range's
	// target keys that the final verification's repair deletes; past it,
	// it deletes none and the migration fails with REPAIR_REFUSED.
	// Default verify.DefaultMaxDeleteShare (1 %).
	RepairMaxDeleteShare float64
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{SMTPFrom: "zdm@localhost", SMTPStartTLS: true, RepairMaxDeleteShare: verify.DefaultMaxDeleteShare}
}

// RegisterFlags defines the lag monitor's flags on fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	d := DefaultConfig()
	fs.StringVar(&c.SMTPAddr, "notify-smtp-addr", d.SMTPAddr, "host:port of the SMTP server notification emails go through; empty sends none")
	fs.StringVar(&c.SMTPFrom, "notify-smtp-from", d.SMTPFrom, "sender address of notification emails")
	fs.StringVar(&c.SMTPUser, "notify-smtp-user", d.SMTPUser, "SMTP user (PLAIN authentication); empty sends without logging in")
	fs.StringVar(&c.SMTPPassword, "notify-smtp-password", d.SMTPPassword, "SMTP password. Prefer ZDM_NOTIFY_SMTP_PASSWORD to the flag")
	fs.BoolVar(&c.SMTPStartTLS, "notify-smtp-starttls", d.SMTPStartTLS, "require STARTTLS on the SMTP connection")
	fs.StringVar(&c.SMTPCAFile, "notify-smtp-ca-file", d.SMTPCAFile, "PEM file of the CAs that sign the SMTP server's certificate; empty trusts the system's")
	fs.StringVar(&c.WebhookSecret, "notify-webhook-secret", d.WebhookSecret, "secret of the X-Zdm-Signature HMAC-SHA256 of webhook bodies. Prefer ZDM_NOTIFY_WEBHOOK_SECRET to the flag")
	fs.Float64Var(&c.RepairMaxDeleteShare, "repair-max-delete-share", d.RepairMaxDeleteShare,
		"largest share (0 to 1) of a key range's target keys that the final verification's repair deletes; past it, it deletes none and the migration fails")
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.RepairMaxDeleteShare < 0 || c.RepairMaxDeleteShare > 1 {
		return fmt.Errorf("--repair-max-delete-share %g: want a share from 0 to 1, for example 0.01 for 1 %%", c.RepairMaxDeleteShare)
	}
	if _, _, err := net.SplitHostPort(c.SMTPAddr); c.SMTPAddr != "" && err != nil {
		return fmt.Errorf("--notify-smtp-addr %q: want host:port, for example smtp.example.com:587", c.SMTPAddr)
	}
	if c.SMTPCAFile != "" {
		if _, err := c.roots(); err != nil {
			return err
		}
	}
	return nil
}

// roots are the CAs the SMTP server's certificate is checked against;
// nil for the system's.
func (c Config) roots() (*x509.CertPool, error) {
	if c.SMTPCAFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(c.SMTPCAFile)
	if err != nil {
		return nil, fmt.Errorf("--notify-smtp-ca-file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--notify-smtp-ca-file %s: no PEM certificate in it", c.SMTPCAFile)
	}
	return pool, nil
}

// Notices, and what their messages say.
const (
	noticeLag       = "LAG_THRESHOLD_REACHED"
	noticeExpiring  = "SYNC_EXPIRING"
	noticeCompleted = "COMPLETED"
	noticeFailed    = "FAILED"
	noticeCancelled = "CANCELLED"
)

const (
	// notifyEvery is how often the notifier looks for notices due.
	notifyEvery = time.Second
	// sendTimeout bounds one delivery attempt.
	sendTimeout = 5 * time.Second
	// maxAttempts is how many times a notice is tried before giving up.
	maxAttempts = 10
	// expiringBefore is how long before the maximum sync duration runs
	// out its owner is told.
	expiringBefore = 24 * time.Hour
	// defaultMaxSync is MigrationOptions.max_sync_duration's default.
	defaultMaxSync = 168 * time.Hour
	// notifyWithin leaves out migrations that ended before: a monitor
	// started next to old migrations does not mail about them.
	notifyWithin = 7 * 24 * time.Hour
)

// retryAfter is how long after attempt n (from 1) the next one may go:
// base, doubling with each attempt, at most ten minutes.
func retryAfter(base time.Duration, n int32) time.Duration {
	return stage.Doubling(base, 10*time.Minute, uint64(n))
}

// notifier sends a migration's notices to its emails and webhooks. Each
// notice to each recipient has a record in bucket zdm_notices, claimed
// (attempt counted) before it is sent and marked delivered after, so it
// is sent once across restarts of any number of monitors; a monitor
// killed between a send and its record sends once more on restart, with
// the same Message-ID and X-Zdm-Delivery for the receiver to drop it.
type notifier struct {
	cfg        Config
	log        *slog.Logger
	tracer     trace.Tracer
	migrations *natsbus.Table[*zdmpb.Migration]
	notices    *natsbus.Table[*zdmpb.NotificationDelivery]
	publish    func(ctx context.Context, subject, id string, m proto.Message) error
	http       *http.Client
	now        func() time.Time
	// retryBase is the wait after a first failed attempt (sendTimeout).
	retryBase time.Duration
}

func (n *notifier) run(ctx context.Context) {
	t := time.NewTicker(notifyEvery)
	defer t.Stop()
	for {
		if err := n.scan(ctx); err != nil && ctx.Err() == nil {
			n.log.Warn("notifications: will retry", slog.Any("error", err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (n *notifier) scan(ctx context.Context) error {
	all, err := n.migrations.List(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range all {
		m := e.Val
		to := m.GetOptions().GetNotifications()
		if len(to.GetEmails()) == 0 && len(to.GetWebhookUrls()) == 0 {
			continue
		}
		for _, notice := range due(m, n.now()) {
			if len(to.GetEmails()) > 0 {
				errs = append(errs, n.deliver(ctx, m, notice, "email", 0, strings.Join(to.GetEmails(), ", ")))
			}
			for i, url := range to.GetWebhookUrls() {
				errs = append(errs, n.deliver(ctx, m, notice, "webhook", i, url))
			}
		}
	}
	return errors.Join(errs...)
}

// due lists the notices m has earned by now.
func due(m *zdmpb.Migration, now time.Time) []string {
	if end := m.GetEndTime(); end != nil && now.Sub(end.AsTime()) > notifyWithin {
		return nil
	}
	var out []string
	if m.GetLag().GetThresholdReachedTime() != nil {
		out = append(out, noticeLag)
	}
	switch m.GetState() {
	case zdmpb.MigrationState_MIGRATION_STATE_SYNCING, zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE:
		limit := m.GetOptions().GetMaxSyncDuration().AsDuration()
		if limit <= 0 {
			limit = defaultMaxSync
		}
		for _, s := range m.GetStages() {
			if s.GetKind() == zdmpb.StageKind_STAGE_KIND_SYNC_INCREMENTAL && s.GetStartTime() != nil &&
				!now.Before(s.GetStartTime().AsTime().Add(limit-expiringBefore)) {
				out = append(out, noticeExpiring)
			}
		}
	case zdmpb.MigrationState_MIGRATION_STATE_COMPLETED:
		out = append(out, noticeCompleted)
	case zdmpb.MigrationState_MIGRATION_STATE_FAILED:
		out = append(out, noticeFailed)
	case zdmpb.MigrationState_MIGRATION_STATE_CANCELLED:
		out = append(out, noticeCancelled)
	}
	return out
}

// deliver sends notice to recipient i of channel unless its record says
// it was delivered, given up, or tried too recently.
func (n *notifier) deliver(ctx context.Context, m *zdmpb.Migration, notice, channel string, i int, recipient string) error {
	key := natsbus.NoticeKey(m.GetMigrationId(), notice, channel, i)
	rec, rev, err := n.notices.Get(ctx, key)
	if errors.Is(err, apierr.ErrNotFound) {
		rec, rev, err = &zdmpb.NotificationDelivery{Notice: notice, Channel: channel, Recipient: recipient}, 0, nil
	}
	if err != nil {
		return err
	}
	now := n.now()
	if rec.GetDelivered() || rec.GetGaveUp() || (rec.GetAttempts() > 0 && now.Before(rec.GetTime().AsTime().Add(retryAfter(n.retryBase, rec.GetAttempts())))) {
		return nil
	}
	// Claim the attempt: only the monitor whose write lands sends it.
	rec.Attempts, rec.Time = rec.GetAttempts()+1, timestamppb.New(now)
	rev, err = n.notices.Put(ctx, key, rec, rev)
	if errors.Is(err, apierr.ErrFailedPrecondition) {
		return nil // another monitor claimed it
	}
	if err != nil {
		return fmt.Errorf("claim notification %s: %w", key, err)
	}
	ctx, sp := telemetry.StartMigrationSpan(ctx, n.tracer, m, "notify "+notice,
		attribute.String("zdm.channel", channel), attribute.Int("zdm.attempt", int(rec.GetAttempts())))
	defer sp.End()
	sctx, cancel := context.WithTimeout(ctx, sendTimeout)
	body := message(m, notice)
	if channel == "email" {
		err = n.email(sctx, key, m, notice, recipient, body)
	} else {
		err = n.webhook(sctx, key, m, notice, recipient, body)
	}
	cancel()
	rec.Delivered, rec.LastError, rec.Time = err == nil, "", timestamppb.New(n.now())
	if err != nil {
		sp.RecordError(err)
		sp.SetStatus(codes.Error, err.Error())
		rec.LastError, rec.GaveUp = err.Error(), rec.GetAttempts() >= maxAttempts
		n.log.Warn("notification not delivered", slog.String("migration", m.GetMigrationId()), slog.String("notice", notice),
			slog.String("channel", channel), slog.Int("attempt", int(rec.GetAttempts())), slog.Any("error", err))
	} else {
		n.log.Info("notification delivered", slog.String("migration", m.GetMigrationId()), slog.String("notice", notice), slog.String("channel", channel))
	}
	if _, err := n.notices.Put(context.WithoutCancel(ctx), key, rec, rev); err != nil {
		return fmt.Errorf("record notification %s: %w", key, err)
	}
	ev := &eventspb.NotificationReport{EventId: fmt.Sprintf("%s-a%d", key, rec.GetAttempts()), MigrationId: m.GetMigrationId(), Delivery: rec}
	return n.publish(context.WithoutCancel(ctx), natsbus.EventSubject(m.GetMigrationId(), natsbus.EventNotice), ev.GetEventId(), ev)
}

// message is a notice in words.
func message(m *zdmpb.Migration, notice string) string {
	id := m.GetMigrationId()
	switch notice {
	case noticeLag:
		return fmt.Sprintf("Migration %s from %s to %s has caught up: its lag reached the threshold of %s at %s. It can be finalised now, with Switchover or StopSync.",
			id, m.GetSourceClusterId(), m.GetTargetClusterId(), m.GetOptions().GetLagThreshold().AsDuration(), m.GetLag().GetThresholdReachedTime().AsTime().Format(time.RFC3339))
	case noticeExpiring:
		return fmt.Sprintf("Migration %s from %s to %s has been syncing for nearly its maximum sync duration of %s; within 24 hours sync stops and the migration fails. Finalise it with Switchover or StopSync before then.",
			id, m.GetSourceClusterId(), m.GetTargetClusterId(), m.GetOptions().GetMaxSyncDuration().AsDuration())
	case noticeCompleted:
		return fmt.Sprintf("Migration %s from %s to %s completed: the target holds the source's data. Clients connect to %s.",
			id, m.GetSourceClusterId(), m.GetTargetClusterId(), m.GetTargetEndpoint())
	case noticeFailed:
		return fmt.Sprintf("Migration %s from %s to %s failed: %s: %s", id, m.GetSourceClusterId(), m.GetTargetClusterId(), m.GetError().GetCode(), m.GetError().GetMessage())
	default:
		return fmt.Sprintf("Migration %s from %s to %s was cancelled; what zdm created on the target was dropped.", id, m.GetSourceClusterId(), m.GetTargetClusterId())
	}
}

// email sends one message to every address of recipient.
func (n *notifier) email(ctx context.Context, key string, m *zdmpb.Migration, notice, recipient, body string) error {
	if n.cfg.SMTPAddr == "" {
		return errors.New("no SMTP server is configured: start the lag monitor with --notify-smtp-addr")
	}
	to := strings.Split(recipient, ", ")
	msg := fmt.Sprintf("From: zdm <%s>\r\nTo: %s\r\nSubject: [zdm] migration %s: %s\r\nDate: %s\r\nMessage-ID: <%s@zdm>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n",
		n.cfg.SMTPFrom, recipient, m.GetMigrationId(), strings.ToLower(strings.ReplaceAll(notice, "_", " ")), n.now().Format(time.RFC1123Z), key, body)
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", n.cfg.SMTPAddr)
	if err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl) // the send fails at the deadline either way
	}
	var c *smtp.Client
	if n.cfg.SMTPStartTLS {
		host, _, _ := net.SplitHostPort(n.cfg.SMTPAddr)
		roots, err := n.cfg.roots()
		if err != nil {
			return err
		}
		if c, err = smtp.NewClientStartTLS(conn, &tls.Config{ServerName: host, RootCAs: roots, MinVersion: tls.VersionTLS12}); err != nil {
			return err
		}
	} else {
		c = smtp.NewClient(conn)
	}
	// After Quit the connection is closed already; before it, on an error,
	// closing is all that is left to do.
	defer func() { _ = c.Close() }()
	if n.cfg.SMTPUser != "" {
		if err := c.Auth(sasl.NewPlainClient("", n.cfg.SMTPUser, n.cfg.SMTPPassword)); err != nil {
			return err
		}
	}
	if err := c.SendMail(n.cfg.SMTPFrom, to, strings.NewReader(msg)); err != nil {
		return err
	}
	return c.Quit()
}

// webhookBody is the JSON a webhook receives.
type webhookBody struct {
	DeliveryID    string    `json:"delivery_id"`
	Notice        string    `json:"notice"`
	MigrationID   string    `json:"migration_id"`
	State         string    `json:"state"`
	SourceCluster string    `json:"source_cluster_id"`
	TargetCluster string    `json:"target_cluster_id"`
	Message       string    `json:"message"`
	LagSeconds    float64   `json:"lag_seconds"`
	Time          time.Time `json:"time"`
}

// Sign is the X-Zdm-Signature of body under secret.
func Sign(secret string, body []byte) string {
	h := hmac.New(sha256.New, []byte(secret))
	h.Write(body)
	return "sha256=" + hex.EncodeToString(h.Sum(nil))
}

// webhook POSTs the notice to url; any 2xx answer delivers it.
func (n *notifier) webhook(ctx context.Context, key string, m *zdmpb.Migration, notice, url, body string) error {
	b, err := json.Marshal(webhookBody{DeliveryID: key, Notice: notice, MigrationID: m.GetMigrationId(),
		State: strings.TrimPrefix(m.GetState().String(), "MIGRATION_STATE_"), SourceCluster: m.GetSourceClusterId(),
		TargetCluster: m.GetTargetClusterId(), Message: body, LagSeconds: m.GetLag().GetLag().AsDuration().Seconds(), Time: n.now().UTC()})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Zdm-Delivery", key)
	req.Header.Set("X-Zdm-Signature", Sign(n.cfg.WebhookSecret, b))
	resp, err := n.http.Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close() // the status is the answer
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook %s answered %s", url, resp.Status)
	}
	return nil
}
