// Package stage is the service side of the stage protocol: consuming the
// coordinator's StageCommands for some stages and reporting each stage's
// end as a StageCompleted event.
package stage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/zdm-io/zdm/pkg/milvusx"
	"github.com/zdm-io/zdm/pkg/natsbus"
	"github.com/zdm-io/zdm/pkg/registry"
	"github.com/zdm-io/zdm/pkg/telemetry"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// Handler carries out one command. Its error fails the stage, with the
// error's text as the reason; code names the failure (UNSPECIFIED for
// STAGE_FAILED). ErrPending, with any code, ends the command without
// ending the stage: other events report its end.
type Handler func(ctx context.Context, cmd *eventspb.StageCommand) (code eventspb.StageError, err error)

// ErrPending is what a Handler returns when the stage goes on after the
// command (a copy, whose units report its end), or when the command asks
// nothing of this service (a pause the copy controls carry).
var ErrPending = errors.New("stage goes on")

// Consume runs h for every command for the given stages (UNSPECIFIED:
// commands to every stage, such as a cancel), on a durable consumer named durable that
// every replica of the service shares, so each command is handled once.
// h runs for at most timeout, telling JetStream every few seconds that it
// is still working, so a command held by a replica that died is
// redelivered within ackWait, not after the whole timeout. The command is
// acked after its result is published. h's context derives from run, the
// service's run context: when run ends (the service stops) the handler is
// cancelled and its command, neither failed nor done, goes back to the
// queue for the next replica or start. ctx bounds the consumer's creation
// only. Each command is handled in a span of tracer that continues the
// coordinator's, so it is in its migration's trace. It returns once
// consuming has started; stop it with the returned context's Drain after
// ending run.
func Consume(ctx, run context.Context, js jetstream.JetStream, prop propagation.TextMapPropagator, tracer trace.Tracer, logger *slog.Logger,
	durable string, stages []zdmpb.StageKind, timeout time.Duration, h Handler) (jetstream.ConsumeContext, error) {
	cons, err := natsbus.CommandsConsumer(durable, stages, ackWait).Create(ctx, js)
	if err != nil {
		return nil, fmt.Errorf("command consumer %s: %w", durable, err)
	}
	return cons.Consume(func(msg jetstream.Msg) {
		var cmd eventspb.StageCommand
		mctx, err := natsbus.Decode(run, prop, msg, &cmd)
		if err != nil {
			logger.Error("malformed command dropped", slog.Any("error", err))
			_ = msg.Term() // a lost Term brings the message back, to be dropped again
			return
		}
		mctx, sp := tracer.Start(mctx, spanName(&cmd), trace.WithAttributes(telemetry.MigrationKey.String(cmd.GetMigrationId())))
		defer sp.End()
		out := &outcome{}
		hctx, cancel := context.WithTimeout(context.WithValue(mctx, outcomeKey{}, out), timeout)
		defer cancel()
		beat := time.NewTicker(ackWait / 3)
		defer beat.Stop()
		go func() {
			for {
				select {
				case <-hctx.Done():
					return
				case <-beat.C:
					_ = msg.InProgress()
				}
			}
		}()
		code, herr := h(hctx, &cmd)
		if run.Err() != nil {
			// Stopping: whatever the handler got done, the command is
			// redelivered and carried out again (handlers are idempotent).
			logger.InfoContext(mctx, "stopping: command left for redelivery", slog.String("migration", cmd.GetMigrationId()),
				slog.String("stage", cmd.GetStage().String()))
			_ = msg.Nak() // a lost Nak brings it back after the ack wait all the same
			return
		}
		if role := Unreachable(herr); role != zdmpb.ClusterRole_CLUSTER_ROLE_UNSPECIFIED {
			// A cluster that does not answer fails the attempt, not the
			// stage: the command is retried with backoff, and the
			// coordinator shows the cluster as down and fails the
			// migration if it stays down too long.
			attempt := Attempt(msg)
			logger.WarnContext(mctx, "cluster does not answer; will retry", slog.String("migration", cmd.GetMigrationId()),
				slog.String("stage", cmd.GetStage().String()), slog.String("cluster", role.String()),
				slog.Uint64("attempt", attempt), slog.Any("error", herr))
			ev := &eventspb.WorkFailed{EventId: fmt.Sprintf("failed-%s-d%d", cmd.GetEventId(), attempt),
				MigrationId: cmd.GetMigrationId(), Stage: cmd.GetStage(), Worker: durable}
			if err := PublishFailure(mctx, js, prop, ev, herr); err != nil {
				logger.WarnContext(mctx, "report failed attempt", slog.Any("error", err))
			}
			_ = msg.NakWithDelay(Backoff(attempt))
			return
		}
		if herr != nil && !errors.Is(herr, ErrPending) {
			sp.RecordError(herr)
			sp.SetStatus(codes.Error, herr.Error())
			logger.ErrorContext(hctx, "stage failed", slog.String("migration", cmd.GetMigrationId()),
				slog.String("stage", cmd.GetStage().String()), slog.Any("error", herr))
		}
		if err := report(mctx, js, prop, &cmd, code, herr, out); err != nil {
			logger.ErrorContext(mctx, "report stage; will retry", slog.Any("error", err))
			_ = msg.NakWithDelay(time.Second)
			return
		}
		if err := msg.DoubleAck(mctx); err != nil {
			// The command comes back and runs again; handlers are idempotent.
			logger.WarnContext(mctx, "ack command", slog.Any("error", err))
		}
	})
}

// spanName names the span of cmd's handling: "COPY_DATA START".
func spanName(cmd *eventspb.StageCommand) string {
	return strings.TrimPrefix(cmd.GetStage().String(), "STAGE_KIND_") + " " + strings.TrimPrefix(cmd.GetAction().String(), "STAGE_ACTION_")
}

// Report publishes the end of cmd's stage: success with a nil err, else
// failure with code (UNSPECIFIED: STAGE_FAILED) and err's text. Its message
// ID derives from the command's, so a repeat is dropped. ErrPending
// reports nothing.
func Report(ctx context.Context, js jetstream.JetStream, prop propagation.TextMapPropagator, cmd *eventspb.StageCommand, code eventspb.StageError, err error) error {
	return report(ctx, js, prop, cmd, code, err, &outcome{})
}

// outcome is what a handler adds to its stage's report (see Repaired and
// Verified).
type outcome struct {
	repairs      []*zdmpb.RangeRepair
	duplicates   []*zdmpb.DuplicateKeys
	verification string
}

type outcomeKey struct{}

// Repaired records, for the report of the stage a Consume handler runs,
// what a verification's repair did to each key range it changed; the
// report carries it whether the stage succeeds or fails.
func Repaired(ctx context.Context, repairs []*zdmpb.RangeRepair) {
	if o, ok := ctx.Value(outcomeKey{}).(*outcome); ok {
		o.repairs = repairs
	}
}

// Duplicates records, for the report of the verification a Consume
// handler runs, the keys the source holds more than once.
func Duplicates(ctx context.Context, dups []*zdmpb.DuplicateKeys) {
	if o, ok := ctx.Value(outcomeKey{}).(*outcome); ok {
		o.duplicates = dups
	}
}

// Verified records, for the report of the verification a Consume handler
// runs after a switchover, its result in words, which the migration keeps
// whatever it is.
func Verified(ctx context.Context, summary string) {
	if o, ok := ctx.Value(outcomeKey{}).(*outcome); ok {
		o.verification = summary
	}
}

func report(ctx context.Context, js jetstream.JetStream, prop propagation.TextMapPropagator, cmd *eventspb.StageCommand, code eventspb.StageError, err error, out *outcome) error {
	if errors.Is(err, ErrPending) {
		return nil
	}
	ev := &eventspb.StageCompleted{EventId: "done-" + cmd.GetEventId(), MigrationId: cmd.GetMigrationId(), Stage: cmd.GetStage(),
		Success: err == nil, Time: timestamppb.Now(), Verification: out.verification,
		Repairs: out.repairs, SourceDuplicates: out.duplicates, RepairedRanges: int64(len(out.repairs))}
	for _, r := range out.repairs {
		ev.RepairedRows += r.GetRowsUpserted() + r.GetKeysDeleted()
	}
	if err != nil {
		ev.Code, ev.ErrorMessage = code, err.Error()
		if ev.Code == eventspb.StageError_STAGE_ERROR_UNSPECIFIED {
			ev.Code = eventspb.StageError_STAGE_ERROR_STAGE_FAILED
		}
	}
	_, perr := natsbus.Publish(ctx, js, prop, natsbus.EventSubject(cmd.GetMigrationId(), natsbus.EventStage), ev.GetEventId(), ev)
	return perr
}

// ackWait is how long a command held by a replica that stopped
// answering waits before another replica gets it.
const ackWait = 6 * time.Second

// Starts reports whether cmd starts (or resumes) a stage.
func Starts(cmd *eventspb.StageCommand) bool {
	return cmd.GetAction() == eventspb.StageAction_STAGE_ACTION_START || cmd.GetAction() == eventspb.StageAction_STAGE_ACTION_RESUME
}

// connectTimeout bounds connecting to a cluster: the SDK's connect
// otherwise waits as long as its context lets it.
const connectTimeout = 10 * time.Second

// Connect opens clients to the command's source and target, resolved from
// reg. On failure it returns the code that names it for the stage report;
// a cluster that does not answer is a ClusterError that Unreachable
// recognises.
func Connect(ctx context.Context, reg *registry.Registry, cmd *eventspb.StageCommand) (src, tgt *milvusx.Client, code eventspb.StageError, err error) {
	srcConn, err := reg.Resolve(ctx, cmd.GetSourceClusterId())
	if err != nil {
		return nil, nil, eventspb.StageError_STAGE_ERROR_CLUSTER_MISSING, fmt.Errorf("source: %w", err)
	}
	tgtConn, err := reg.Resolve(ctx, cmd.GetTargetClusterId())
	if err != nil {
		return nil, nil, eventspb.StageError_STAGE_ERROR_CLUSTER_MISSING, fmt.Errorf("target: %w", err)
	}
	if src, err = ConnectCluster(ctx, srcConn); err != nil {
		return nil, nil, eventspb.StageError_STAGE_ERROR_SOURCE_UNREACHABLE, OnSource(err)
	}
	if tgt, err = ConnectCluster(ctx, tgtConn); err != nil {
		return nil, nil, eventspb.StageError_STAGE_ERROR_TARGET_UNREACHABLE, errors.Join(OnTarget(err), src.Close())
	}
	return src, tgt, eventspb.StageError_STAGE_ERROR_UNSPECIFIED, nil
}

// ConnectCluster connects to conn's default database within connectTimeout.
func ConnectCluster(ctx context.Context, conn *zdmpb.ClusterConnection) (*milvusx.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	return milvusx.Open(ctx, conn, "")
}

// CloseClients closes the clients a stage opened. Closing changes no result
// of the stage's work, so a failure is only logged.
func CloseClients(ctx context.Context, logger *slog.Logger, clients ...*milvusx.Client) {
	for _, c := range clients {
		if err := c.Close(); err != nil {
			logger.WarnContext(ctx, "close cluster client", slog.Any("error", err))
		}
	}
}
