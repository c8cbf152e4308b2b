package lagmonitor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/zdm-io/zdm/pkg/apierr"
	"github.com/zdm-io/zdm/pkg/natsbus"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
	lagpb "github.com/zdm-io/zdm/proto/zdm/lag/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// reportEvery is how often lag is measured and reported.
const reportEvery = time.Second

// Lag is now minus the applied watermark the applier stores after each
// batch it applies (AppliedPosition): it is derived from stored state
// only, so it survives a restart of any process, and it keeps rising
// while the applier is stopped, since nothing moves the watermark then.

// lagMeter measures the lag of every syncing migration each second,
// publishes a LagReport for each and exports it as gauges.
type lagMeter struct {
	publish    func(ctx context.Context, subject, id string, ev *eventspb.LagReport) error
	log        *slog.Logger
	migrations *natsbus.Table[*zdmpb.Migration]
	positions  *natsbus.Table[*eventspb.AppliedPosition]
	gauge      *prometheus.GaugeVec
	collGauge  *prometheus.GaugeVec

	mu     sync.Mutex
	labels map[string][]string // gauge label sets of each migration, to drop when it ends
}

func newLagMeter(publish func(ctx context.Context, subject, id string, ev *eventspb.LagReport) error, log *slog.Logger, migrations *natsbus.Table[*zdmpb.Migration], positions *natsbus.Table[*eventspb.AppliedPosition], reg prometheus.Registerer) (*lagMeter, error) {
	l := &lagMeter{publish: publish, log: log, migrations: migrations, positions: positions, labels: map[string][]string{},
		gauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "zdm_migration_lag_seconds",
			Help: "Now minus the applied watermark of a syncing migration: how far its target is behind its source."}, []string{"migration"}),
		collGauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "zdm_collection_lag_seconds",
			Help: "Lag of one collection of a syncing migration."}, []string{"migration", "database", "collection"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{l.gauge, l.collGauge} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register lag gauges: %w", err)
			}
		}
	}
	return l, nil
}

// syncing reports whether lag means something for m: its changes are
// being applied.
func syncing(m *zdmpb.Migration) bool {
	if m.GetType() != zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME {
		return false
	}
	switch m.GetState() {
	case zdmpb.MigrationState_MIGRATION_STATE_SYNCING, zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE,
		zdmpb.MigrationState_MIGRATION_STATE_STOPPING_SYNC:
		return true
	}
	return false
}

func (l *lagMeter) run(ctx context.Context) {
	t := time.NewTicker(reportEvery)
	defer t.Stop()
	for {
		if err := l.measureAll(ctx); err != nil && ctx.Err() == nil {
			l.log.Warn("measure lag", slog.Any("error", err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (l *lagMeter) measureAll(ctx context.Context) error {
	all, err := l.migrations.List(ctx)
	if err != nil {
		return err
	}
	live := map[string]bool{}
	var errs []error
	for _, e := range all {
		m := e.Val
		if !syncing(m) {
			continue
		}
		live[m.GetMigrationId()] = true
		rep, err := l.measure(ctx, m, time.Now())
		if err != nil || rep == nil {
			errs = append(errs, err)
			continue
		}
		l.export(m, rep)
		subject := natsbus.EventSubject(m.GetMigrationId(), natsbus.EventLag)
		errs = append(errs, l.publish(ctx, subject, rep.GetEventId(), rep))
	}
	l.mu.Lock()
	for id, sets := range l.labels {
		if !live[id] {
			l.gauge.DeleteLabelValues(id)
			for i := 0; i+1 < len(sets); i += 2 {
				l.collGauge.DeleteLabelValues(id, sets[i], sets[i+1])
			}
			delete(l.labels, id)
		}
	}
	l.mu.Unlock()
	return errors.Join(errs...)
}

// measure is m's lag at now; nil before the applier stored a watermark.
func (l *lagMeter) measure(ctx context.Context, m *zdmpb.Migration, now time.Time) (*eventspb.LagReport, error) {
	pos, _, err := l.positions.Get(ctx, m.GetMigrationId())
	if errors.Is(err, apierr.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if pos.GetWatermarkTime() == nil {
		return nil, nil
	}
	wm := pos.GetWatermarkTime()
	lag := max(now.Sub(wm.AsTime()), 0)
	rep := &eventspb.LagReport{EventId: fmt.Sprintf("lag-%s-%d", m.GetMigrationId(), now.UnixMilli()), MigrationId: m.GetMigrationId(),
		Lag: durationpb.New(lag), AppliedWatermark: wm, Time: timestamppb.New(now),
		ThresholdReached: m.GetState() == zdmpb.MigrationState_MIGRATION_STATE_SYNCING && lag <= m.GetOptions().GetLagThreshold().AsDuration()}
	// Changes are applied in stream order, across collections: each
	// collection is as far as the migration.
	for _, c := range m.GetCollections() {
		rep.Collections = append(rep.Collections, &eventspb.CollectionLag{Database: c.GetDatabase(), Collection: c.GetCollection(),
			Lag: rep.GetLag(), AppliedWatermark: wm})
	}
	return rep, nil
}

func (l *lagMeter) export(m *zdmpb.Migration, rep *eventspb.LagReport) {
	id := m.GetMigrationId()
	l.gauge.WithLabelValues(id).Set(rep.GetLag().AsDuration().Seconds())
	var sets []string
	for _, c := range rep.GetCollections() {
		l.collGauge.WithLabelValues(id, c.GetDatabase(), c.GetCollection()).Set(c.GetLag().AsDuration().Seconds())
		sets = append(sets, c.GetDatabase(), c.GetCollection())
	}
	l.mu.Lock()
	l.labels[id] = sets
	l.mu.Unlock()
}

// getLag answers GetLag from stored state.
func (l *lagMeter) getLag(ctx context.Context, id string) (*lagpb.GetLagResponse, error) {
	m, _, err := l.migrations.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if m.GetType() != zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME {
		return nil, fmt.Errorf("%w: migration %q is %s: only ZERO_DOWNTIME migrations sync and have a lag", apierr.ErrFailedPrecondition, id, m.GetType())
	}
	rep, err := l.measure(ctx, m, time.Now())
	if err != nil {
		return nil, err
	}
	if rep == nil {
		return nil, fmt.Errorf("%w: migration %q has applied no change yet (it is %s); lag is measured once it syncs", apierr.ErrFailedPrecondition, id, m.GetState())
	}
	return &lagpb.GetLagResponse{Lag: rep.GetLag(), AppliedWatermark: rep.GetAppliedWatermark()}, nil
}
