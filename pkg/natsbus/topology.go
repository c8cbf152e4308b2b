package natsbus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream names and subject spaces. docs/architecture.md lists the subjects.
const (
	// CommandsStream carries StageCommand from the coordinator
	// (zdm.cmd.<migration>.<stage>).
	CommandsStream = "ZDM_COMMANDS"
	// EventsStream carries stage, unit, progress, lag and state events to
	// the coordinator and other listeners (zdm.evt.<migration>.<kind>).
	EventsStream = "ZDM_EVENTS"
	// WorkStream is the copy work queue (zdm.work.<migration>): each unit is
	// delivered to one copier and removed once acked.
	WorkStream = "ZDM_WORK"
	// ChangesStream carries captured changes
	// (zdm.chg.<migration>.<database>[.<collection>]).
	ChangesStream = "ZDM_CHANGES"
)

// ChangeLimits bound the change stream. It must keep every change until
// it is applied: when full it refuses new changes (the gateway answers
// UNAVAILABLE and the migration fails) rather than discard old ones.
type ChangeLimits struct {
	// MaxAge keeps changes this long; it should cover the longest
	// allowed sync plus a day. 0: DefaultChangeMaxAge.
	MaxAge time.Duration
	// MaxBytes caps the stream's size; 0: only the JetStream server's
	// storage limit caps it.
	MaxBytes int64
}

// DefaultChangeMaxAge is the longest max_sync_duration (720h) plus a day.
const DefaultChangeMaxAge = 744 * time.Hour

// DuplicateWindow is how long JetStream remembers message IDs to drop
// duplicate publishes. It covers a publisher's retry after a crash and
// restart.
const DuplicateWindow = 10 * time.Minute

// Streams returns the stream configurations zdm needs, with the given
// replica count (1 for the embedded server, 3 in a production cluster).
func Streams(replicas int, limits ChangeLimits) []jetstream.StreamConfig {
	base := func(name, desc string, subjects ...string) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name:        name,
			Description: desc,
			Subjects:    subjects,
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
			Duplicates:  DuplicateWindow,
		}
	}
	cmd := base(CommandsStream, "zdm stage commands", commandSpace+".>")
	evt := base(EventsStream, "zdm stage, progress and lag events", eventSpace+".>")
	work := base(WorkStream, "zdm snapshot copy work units", workSpace+".>")
	work.Retention = jetstream.WorkQueuePolicy
	chg := base(ChangesStream, "zdm captured changes", changeSpace+".>")
	chg.MaxAge, chg.MaxBytes, chg.Discard = limits.MaxAge, limits.MaxBytes, jetstream.DiscardNew
	if chg.MaxAge == 0 {
		chg.MaxAge = DefaultChangeMaxAge
	}
	if chg.MaxBytes == 0 {
		chg.MaxBytes = -1
	}
	return []jetstream.StreamConfig{cmd, evt, work, chg}
}

// EnsureStreams creates or updates every stream zdm needs. It is safe to
// call from any number of processes at once.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, replicas int, limits ChangeLimits) error {
	for _, cfg := range Streams(replicas, limits) {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("stream %s: %w", cfg.Name, err)
		}
	}
	return nil
}

// PurgeChanges drops every captured change of migration from the change
// stream, once nothing will apply them (the migration ended).
func PurgeChanges(ctx context.Context, js jetstream.JetStream, migration string) error {
	s, err := js.Stream(ctx, ChangesStream)
	if err != nil {
		return fmt.Errorf("change stream: %w", err)
	}
	for _, f := range []string{ChangeFilter(migration), SwitchedFilter(migration)} {
		if err := s.Purge(ctx, jetstream.WithPurgeSubject(f)); err != nil {
			return fmt.Errorf("purge changes of %s: %w", migration, err)
		}
	}
	return nil
}
