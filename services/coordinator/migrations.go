package coordinator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/zdm-io/zdm/pkg/apierr"
	"github.com/zdm-io/zdm/pkg/auth"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// Option defaults and ranges (see MigrationOptions in the API).
const (
	defaultLagThreshold   = 10 * time.Second
	defaultMaxSync        = 7 * 24 * time.Hour
	defaultWorkUnitRows   = 100_000
	maxListedCollections  = 10
	minLagThreshold       = time.Second
	maxLagThreshold       = time.Hour
	minMaxSync            = time.Hour
	maxMaxSync            = 30 * 24 * time.Hour
	minWorkUnitRows       = 1_000
	maxWorkUnitRows       = 10_000_000
	defaultMaxWritePause  = time.Second
	minMaxWritePause      = 100 * time.Millisecond
	maxMaxWritePause      = 30 * time.Second
	generatedIDRandomSize = 4
)

// CreateMigration implements zdmpb.MigrationServiceServer.
func (c *Coordinator) CreateMigration(ctx context.Context, req *zdmpb.CreateMigrationRequest) (*zdmpb.CreateMigrationResponse, error) {
	if err := checkIDs(req); err != nil {
		return nil, err
	}
	opts, err := validateCreate(req)
	if err != nil {
		return nil, err
	}
	id := req.GetMigrationId()
	if id == "" {
		id = newMigrationID()
	}
	m, err := c.create(ctx, id, req.GetType(), req.GetSourceClusterId(), req.GetTargetClusterId(), opts)
	if err != nil {
		return nil, err
	}
	return &zdmpb.CreateMigrationResponse{Migration: m}, nil
}

// checkTargetIsNew refuses, within ProbeTimeout, a target that holds user
// collections in any database, naming what it found (see
// Prober.TargetIsNew).
func (c *Coordinator) checkTargetIsNew(ctx context.Context, id string, conn *zdmpb.ClusterConnection) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ProbeTimeout)
	defer cancel()
	return c.prober().TargetIsNew(ctx, id, conn)
}

// validateCreate checks the request, its IDs checked already, and returns
// its options with defaults filled in.
func validateCreate(req *zdmpb.CreateMigrationRequest) (*zdmpb.MigrationOptions, error) {
	switch req.GetType() {
	case zeroDowntime, offline:
	default:
		return nil, bad("type %s: want MIGRATION_TYPE_ZERO_DOWNTIME or MIGRATION_TYPE_OFFLINE", req.GetType())
	}
	if req.GetSourceClusterId() == req.GetTargetClusterId() {
		return nil, bad("source and target are the same cluster %q", req.GetSourceClusterId())
	}
	o := proto.Clone(req.GetOptions()).(*zdmpb.MigrationOptions)
	if o == nil {
		o = &zdmpb.MigrationOptions{}
	}
	var err error
	if o.LagThreshold, err = durationOption("options.lag_threshold", o.GetLagThreshold(), defaultLagThreshold, minLagThreshold, maxLagThreshold); err != nil {
		return nil, err
	}
	if o.MaxSyncDuration, err = durationOption("options.max_sync_duration", o.GetMaxSyncDuration(), defaultMaxSync, minMaxSync, maxMaxSync); err != nil {
		return nil, err
	}
	if err := validateThrottle("options.throttle", o.GetThrottle()); err != nil {
		return nil, err
	}
	switch w := o.GetWorkUnitRows(); {
	case w == 0:
		o.WorkUnitRows = defaultWorkUnitRows
	case w < minWorkUnitRows || w > maxWorkUnitRows:
		return nil, bad("options.work_unit_rows %d: want %d to %d", w, minWorkUnitRows, maxWorkUnitRows)
	}
	for _, e := range o.GetNotifications().GetEmails() {
		if _, err := mail.ParseAddress(e); err != nil {
			return nil, bad("options.notifications.emails: %q is not an email address", e)
		}
	}
	for _, w := range o.GetNotifications().GetWebhookUrls() {
		if u, err := url.Parse(w); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, bad("options.notifications.webhook_urls: %q is not an http(s) URL", w)
		}
	}
	return o, nil
}

func durationOption(name string, d *durationpb.Duration, def, lo, hi time.Duration) (*durationpb.Duration, error) {
	if d == nil || d.AsDuration() == 0 {
		return durationpb.New(def), nil
	}
	if err := d.CheckValid(); err != nil || d.AsDuration() < lo || d.AsDuration() > hi {
		return nil, fmt.Errorf("%w: %s %s: want %s to %s", apierr.ErrInvalidArgument, name, d.AsDuration(), lo, hi)
	}
	return d, nil
}

func newMigrationID() string {
	b := make([]byte, generatedIDRandomSize)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux
	return "m-" + hex.EncodeToString(b)
}

// GetMigration implements zdmpb.MigrationServiceServer.
func (c *Coordinator) GetMigration(ctx context.Context, req *zdmpb.GetMigrationRequest) (*zdmpb.GetMigrationResponse, error) {
	if err := checkIDs(req); err != nil {
		return nil, err
	}
	m, rev, err := c.store.migrations.Get(ctx, req.GetMigrationId())
	if err != nil {
		return nil, err
	}
	return &zdmpb.GetMigrationResponse{Migration: withRevision(m, rev)}, nil
}

// ListMigrations implements zdmpb.MigrationServiceServer. Pages are keyed
// by (create time, ID), newest first, so a migration created while a
// caller pages neither shifts nor repeats the rest.
func (c *Coordinator) ListMigrations(ctx context.Context, req *zdmpb.ListMigrationsRequest) (*zdmpb.ListMigrationsResponse, error) {
	if err := checkIDs(req); err != nil {
		return nil, err
	}
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	tok, err := migrationPages.after(req.GetPageToken())
	if err != nil {
		return nil, err
	}
	all, err := c.store.migrations.List(ctx)
	if err != nil {
		return nil, err
	}
	ms := make([]*zdmpb.Migration, 0, len(all))
	for _, e := range all {
		m := withRevision(e.Val, e.Rev)
		if len(req.GetStates()) > 0 && !slices.Contains(req.GetStates(), m.GetState()) {
			continue
		}
		if id := req.GetClusterId(); id != "" && m.GetSourceClusterId() != id && m.GetTargetClusterId() != id {
			continue
		}
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b *zdmpb.Migration) int { return strings.Compare(listKey(b), listKey(a)) })
	resp := &zdmpb.ListMigrationsResponse{}
	for _, m := range ms {
		if tok != "" && listKey(m) >= tok {
			continue
		}
		if len(resp.Migrations) == size {
			resp.NextPageToken = migrationPages.token(listKey(resp.Migrations[size-1]))
			break
		}
		resp.Migrations = append(resp.Migrations, m)
	}
	return resp, nil
}

// listKey orders migrations by creation time, then ID.
func listKey(m *zdmpb.Migration) string {
	return fmt.Sprintf("%020s/%s", strconv.FormatInt(m.GetCreateTime().AsTime().UnixNano(), 10), m.GetMigrationId())
}

// StopSync implements zdmpb.MigrationServiceServer.
func (c *Coordinator) StopSync(ctx context.Context, req *zdmpb.StopSyncRequest) (*zdmpb.StopSyncResponse, error) {
	if err := checkIDs(req); err != nil {
		return nil, err
	}
	if !req.GetConfirmWritesStopped() {
		return nil, fmt.Errorf("%w: confirm_writes_stopped must be true: stop every write to the source first, then call StopSync again", apierr.ErrInvalidArgument)
	}
	m, err := c.apiTransition(ctx, req.GetMigrationId(), TriggerStopSync, "stop sync requested; writes to the source confirmed stopped")
	if err != nil {
		return nil, err
	}
	return &zdmpb.StopSyncResponse{Migration: m}, nil
}

// Switchover implements zdmpb.MigrationServiceServer.
func (c *Coordinator) Switchover(ctx context.Context, req *zdmpb.SwitchoverRequest) (*zdmpb.SwitchoverResponse, error) {
	if err := checkIDs(req); err != nil {
		return nil, err
	}
	pause, err := durationOption("max_write_pause", req.GetMaxWritePause(), defaultMaxWritePause, minMaxWritePause, maxMaxWritePause)
	if err != nil {
		return nil, err
	}
	cur, _, err := c.store.migrations.Get(ctx, req.GetMigrationId())
	if err != nil {
		return nil, err
	}
	if cur.GetState() == ready {
		// Clients reach the target through the gateway: with none, the
		// switch would leave them on the source.
		ok, err := c.stages.Fronted(ctx, cur.GetSourceClusterId())
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("%w: no zdm gateway replica is alive in front of source cluster %q, so no client could be switched to the target: start one with --gateway-cluster %s, or finalise with StopSync",
				apierr.ErrFailedPrecondition, cur.GetSourceClusterId(), cur.GetSourceClusterId())
		}
	}
	m, err := c.transition(ctx, req.GetMigrationId(), Event{Trigger: TriggerSwitchover, Time: c.now(), Actor: auth.Actor(ctx),
		Reason: fmt.Sprintf("switchover requested; writes may be held for up to %s", pause.AsDuration()), MaxWritePause: pause.AsDuration()})
	if errors.Is(err, ErrInvalidTransition) {
		return nil, fmt.Errorf("%w: migration %q: %w; a switchover starts once lag has reached the threshold (READY_TO_FINALIZE)", apierr.ErrFailedPrecondition, req.GetMigrationId(), err)
	}
	if err != nil {
		return nil, err
	}
	return &zdmpb.SwitchoverResponse{Migration: m}, nil
}

// CancelMigration implements zdmpb.MigrationServiceServer.
func (c *Coordinator) CancelMigration(ctx context.Context, req *zdmpb.CancelMigrationRequest) (*zdmpb.CancelMigrationResponse, error) {
	if err := checkIDs(req); err != nil {
		return nil, err
	}
	m, err := c.apiTransition(ctx, req.GetMigrationId(), TriggerCancel, reasonOr(req.GetReason(), "cancel requested"))
	if err != nil {
		return nil, err
	}
	return &zdmpb.CancelMigrationResponse{Migration: m}, nil
}

// PauseMigration implements zdmpb.MigrationServiceServer.
func (c *Coordinator) PauseMigration(ctx context.Context, req *zdmpb.PauseMigrationRequest) (*zdmpb.PauseMigrationResponse, error) {
	if err := checkIDs(req); err != nil {
		return nil, err
	}
	m, err := c.apiTransition(ctx, req.GetMigrationId(), TriggerPause, reasonOr(req.GetReason(), "pause requested"))
	if err != nil {
		return nil, err
	}
	return &zdmpb.PauseMigrationResponse{Migration: m}, nil
}

// ResumeMigration implements zdmpb.MigrationServiceServer.
func (c *Coordinator) ResumeMigration(ctx context.Context, req *zdmpb.ResumeMigrationRequest) (*zdmpb.ResumeMigrationResponse, error) {
	if err := checkIDs(req); err != nil {
		return nil, err
	}
	m, err := c.apiTransition(ctx, req.GetMigrationId(), TriggerResume, "resume requested")
	if err != nil {
		return nil, err
	}
	return &zdmpb.ResumeMigrationResponse{Migration: m}, nil
}

// SetThrottle implements zdmpb.MigrationServiceServer.
func (c *Coordinator) SetThrottle(ctx context.Context, req *zdmpb.SetThrottleRequest) (*zdmpb.SetThrottleResponse, error) {
	if err := checkIDs(req); err != nil {
		return nil, err
	}
	if err := validateThrottle("throttle", req.GetThrottle()); err != nil {
		return nil, err
	}
	m, rev, err := c.store.migrations.Update(ctx, req.GetMigrationId(), func(m *zdmpb.Migration) error {
		if IsTerminal(m.GetState()) {
			return fmt.Errorf("%w: migration %q is %s; a throttle applies only to a running migration",
				apierr.ErrFailedPrecondition, req.GetMigrationId(), stateName(m.GetState()))
		}
		if m.Options == nil {
			m.Options = &zdmpb.MigrationOptions{}
		}
		m.Options.Throttle = req.GetThrottle()
		m.UpdateTime = timestamppb.New(c.now())
		return nil
	})
	if err != nil {
		return nil, err
	}
	m = withRevision(m, rev)
	if err := c.putControl(ctx, m); err != nil {
		return nil, err
	}
	return &zdmpb.SetThrottleResponse{Migration: m}, nil
}

// bad is an InvalidArgument error.
func bad(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{apierr.ErrInvalidArgument}, a...)...)
}

func validateThrottle(field string, t *zdmpb.Throttle) error {
	if t.GetMaxRowsPerSecond() < 0 || t.GetMaxBytesPerSecond() < 0 {
		return bad("%s limits must not be negative (0 means unlimited)", field)
	}
	return nil
}

func reasonOr(reason, def string) string {
	if reason != "" {
		return reason
	}
	return def
}

// apiTransition applies a caller's trigger; a transition the current state
// does not allow is FailedPrecondition naming that state.
func (c *Coordinator) apiTransition(ctx context.Context, id string, trig Trigger, reason string) (*zdmpb.Migration, error) {
	m, err := c.transition(ctx, id, Event{Trigger: trig, Time: c.now(), Actor: auth.Actor(ctx), Reason: reason})
	if errors.Is(err, ErrInvalidTransition) {
		return nil, fmt.Errorf("%w: migration %q: %w", apierr.ErrFailedPrecondition, id, err)
	}
	return m, err
}
