package natsbus

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// The consumers: every consumer zdm reads a stream with is declared here,
// with its stream and configuration. docs/architecture.md lists who reads
// each.

// Durable is a durable consumer: every replica of the service that reads
// it shares it, so each message goes to one of them at a time, and what
// was not acked when they stopped is delivered again after a restart.
type Durable struct {
	// Stream the consumer reads.
	Stream string
	// Config of the consumer; Config.Durable is its name.
	Config jetstream.ConsumerConfig
}

// Create creates the consumer on its stream, or updates its
// configuration, and returns it. It is safe to call from any number of
// processes at once.
func (d Durable) Create(ctx context.Context, js jetstream.JetStream) (jetstream.Consumer, error) {
	return js.CreateOrUpdateConsumer(ctx, d.Stream, d.Config)
}

// Ordered is an ordered consumer: one reader, in stream order, that
// keeps its position itself (the server forgets it when the reader goes).
type Ordered struct {
	// Stream the consumer reads.
	Stream string
	// Config of the consumer.
	Config jetstream.OrderedConsumerConfig
}

// Create starts the consumer on its stream.
func (o Ordered) Create(ctx context.Context, js jetstream.JetStream) (jetstream.Consumer, error) {
	return js.OrderedConsumer(ctx, o.Stream, o.Config)
}

// Names of the durable consumers that are not a stage's (see
// CommandsConsumer for those).
const (
	// EventsDurable is the coordinator's consumer of EventsStream.
	EventsDurable = "coordinator"
	// WorkDurable is the consumer of WorkStream every copier pulls from.
	WorkDurable = "copiers"
	// CopierCommandsDurable is the snapshot copiers' CommandsConsumer.
	CopierCommandsDurable = "snapshot-copier"
	// LagMonitorCommandsDurable is the lag monitors' CommandsConsumer.
	LagMonitorCommandsDurable = "lag-monitor"
)

// EventsConsumer is the coordinator's consumer of every event kind it
// handles. An event not acked within ackWait (a coordinator that died
// with it, or a handler cut short) is delivered again, without limit: an
// event is never dropped for having failed.
func EventsConsumer(ackWait time.Duration) Durable {
	var filters []string
	for _, k := range []EventKind{EventStage, EventLag, EventPlan, EventUnit, EventProgress, EventFailed, EventGateway, EventNotice} {
		filters = append(filters, EventFilter(k))
	}
	return Durable{Stream: EventsStream, Config: jetstream.ConsumerConfig{
		Durable: EventsDurable, AckPolicy: jetstream.AckExplicitPolicy, FilterSubjects: filters,
		AckWait: ackWait, MaxDeliver: -1,
	}}
}

// CommandsConsumer is the consumer named durable (the service that
// carries the stages out) of the commands for stages
// (STAGE_KIND_UNSPECIFIED: commands to every stage, such as a cancel). A
// command not acked within ackWait is delivered again, without limit.
func CommandsConsumer(durable string, stages []zdmpb.StageKind, ackWait time.Duration) Durable {
	var filters []string
	for _, s := range stages {
		filters = append(filters, CommandFilter(s))
	}
	return Durable{Stream: CommandsStream, Config: jetstream.ConsumerConfig{
		Durable: durable, AckPolicy: jetstream.AckExplicitPolicy, FilterSubjects: filters,
		AckWait: ackWait, MaxDeliver: -1,
	}}
}

// WorkConsumer is the copy work queue's consumer. A unit not acked within
// ackWait (its copier stopped answering) goes to another copier, without
// limit: failures are counted and ended by the coordinator, not here.
func WorkConsumer(ackWait time.Duration) Durable {
	return Durable{Stream: WorkStream, Config: jetstream.ConsumerConfig{
		Durable: WorkDurable, AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait, MaxDeliver: -1,
	}}
}

// ChangesReader is the applier's reader of migration's captured changes,
// from stream sequence from on (the one after the last it applied).
func ChangesReader(migration string, from uint64) Ordered {
	return Ordered{Stream: ChangesStream, Config: jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{ChangeFilter(migration)},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy, OptStartSeq: from,
	}}
}

// SwitchedReader reads, from the start, the writes recorded after
// migration's switchover (see SwitchedSubject).
func SwitchedReader(migration string) Ordered {
	return Ordered{Stream: ChangesStream, Config: jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{SwitchedFilter(migration)},
	}}
}
