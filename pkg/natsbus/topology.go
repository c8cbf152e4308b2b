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
	// ChangesStream carries captured changes and resolved timestamps
	// (zdm.chg.<database>.<collection>, zdm.resolved.<gateway>).
	ChangesStream = "ZDM_CHANGES"
)

// DuplicateWindow is how long JetStream remembers message IDs to drop
// duplicate publishes. It covers a publisher's retry after a crash and
// restart.
const DuplicateWindow = 10 * time.Minute

// Streams returns the stream configurations zdm needs, with the given
// replica count (1 for the embedded server, 3 in a production cluster).
func Streams(replicas int) []jetstream.StreamConfig {
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
	chg := base(ChangesStream, "zdm captured changes and resolved timestamps", changeSpace+".>", resolvedSpace+".>")
	return []jetstream.StreamConfig{cmd, evt, work, chg}
}

// EnsureStreams creates or updates every stream zdm needs. It is safe to
// call from any number of processes at once.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, replicas int) error {
	for _, cfg := range Streams(replicas) {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("stream %s: %w", cfg.Name, err)
		}
	}
	return nil
}
