package streamer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/zdm-io/zdm/pkg/milvusx"
	"github.com/zdm-io/zdm/pkg/natsbus"
	"github.com/zdm-io/zdm/pkg/telemetry"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// resolveEvery is how often a gateway replica publishes its resolved
// timestamp.
const resolveEvery = 200 * time.Millisecond

// capture is the gateway's side of the handoff (shared/DESIGN.md): while
// a ZERO_DOWNTIME migration from its cluster runs, every mutation and
// replicated DDL the source acknowledges is published on the change
// stream before the client hears of it, and the replica's resolved
// timestamp is kept in the gateways bucket.
type capture struct {
	id, addr    string
	viewAddr    string // the target view's address, if served
	js          jetstream.JetStream
	prop        propagation.TextMapPropagator
	tracer      trace.Tracer           // spans of sampled changes (see traceEvery)
	captured    *prometheus.CounterVec // changes published, by migration; may be nil
	log         *slog.Logger
	src         *sourceClient
	locks       *keyLocks
	gateways    jetstream.KeyValue
	switchovers jetstream.KeyValue
	ctx         context.Context // the streamer's run context

	mu        sync.Mutex
	changed   *sync.Cond
	nextCall  uint64              // IDs of writes, in the order they started
	inflight  map[uint64]struct{} // writes started and not yet answered
	armed     string              // migration whose capture is armed
	armTs     uint64              // T0, once every write older than arming ended
	seq       uint64              // last change sequence of this replica
	streamSeq uint64              // highest stream sequence of a change published
	stopped   string              // migration whose writes are refused for stop sync
	schemas   map[string]*schemapb.FieldSchema
	queues    map[string]*queue // changes waiting to be published, by subject

	view     view   // what the policy said last
	wanted   wanted // the switchover attempt about to hold
	hold     hold   // the switchover attempt whose writes are held
	released hold   // the last attempt released
	decided  int32  // last switchover attempt of the armed migration decided
	switched string // migration switched over: calls go to its target
}

func newCapture(ctx context.Context, id, addr string, js jetstream.JetStream, prop propagation.TextMapPropagator, tracer trace.Tracer, log *slog.Logger,
	src *sourceClient, gateways, switchovers jetstream.KeyValue) *capture {
	c := &capture{ctx: ctx, id: id, addr: addr, js: js, prop: prop, tracer: tracer, log: log, src: src, locks: newKeyLocks(),
		gateways: gateways, switchovers: switchovers, inflight: map[uint64]struct{}{}, schemas: map[string]*schemapb.FieldSchema{},
		queues: map[string]*queue{}, view: view{upstream: src.current()}}
	c.changed = sync.NewCond(&c.mu)
	return c
}

// errStopped refuses a write of a migration that stopped syncing.
var errStopped = errors.New("writes stopped")

// begin registers a write that is about to go to the source and returns
// its ID, the migration armed when it started ("" for none) and whether
// it goes to that migration's target after a switchover. While a
// switchover holds writes it waits, until the hold ends or ctx does. A
// write of a migration that stopped syncing is refused with errStopped
// and nothing is registered.
func (c *capture) begin(ctx context.Context) (id uint64, migration string, after bool, err error) {
	stop := context.AfterFunc(ctx, c.changed.Broadcast)
	defer stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	counted := false
	for c.hold.attempt != 0 {
		if !counted {
			c.hold.writes, counted = c.hold.writes+1, true
		}
		if err := ctx.Err(); err != nil {
			return 0, "", false, err
		}
		c.changed.Wait()
	}
	if c.stopped != "" && c.stopped == c.armed {
		return 0, c.stopped, false, errStopped
	}
	c.nextCall++
	c.inflight[c.nextCall] = struct{}{}
	return c.nextCall, c.armed, c.armed != "" && c.switched == c.armed, nil
}

// end marks write id answered.
func (c *capture) end(id uint64) {
	c.mu.Lock()
	delete(c.inflight, id)
	c.mu.Unlock()
	c.changed.Broadcast()
}

// waitBefore waits until every write that started at or before id has
// been answered (and so published, if captured), or ctx ends.
func (c *capture) waitBefore(ctx context.Context, id uint64) error {
	stop := context.AfterFunc(ctx, c.changed.Broadcast)
	defer stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		older := false
		for w := range c.inflight {
			if w <= id {
				older = true
				break
			}
		}
		if !older {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		c.changed.Wait()
	}
}

// follow does what the policy says: it routes calls to v.upstream (or to
// the target of a migration switched over before its record says so),
// arms capture for v.active (nil: disarms), refuses its writes once it
// stops syncing, and holds them while it switches over. Arming completes
// in the background: T0 is taken once every write that started before
// it has ended, so no write acknowledged after T0 escapes the stream.
func (c *capture) follow(v view) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.view = v
	m := v.active
	id := m.GetMigrationId()
	if id != c.armed {
		if c.hold.attempt != 0 {
			c.endHold(false) // its migration ended while holding
		}
		c.armed, c.armTs, c.stopped, c.decided, c.streamSeq = id, 0, "", 0, 0
		if id != "" && !switched(m) {
			go c.completeArm(c.ctx, id, c.nextCall)
		}
	}
	if switched(m) {
		c.switched = id
	}
	up := v.upstream
	if id != "" && c.switched == id {
		up = m.GetTargetClusterId()
	}
	c.src.use(up)
	if id == "" {
		return
	}
	if stoppedSync(m.GetState()) && c.switched != id {
		c.stopped = id
	}
	attempt := m.GetSwitchover().GetAttempt()
	switch {
	case m.GetState() == zdmpb.MigrationState_MIGRATION_STATE_SWITCHING_OVER && attempt > c.decided && c.hold.attempt != attempt &&
		(c.wanted.migration != id || c.wanted.attempt != attempt):
		c.awaitHold(m)
	case m.GetState() != zdmpb.MigrationState_MIGRATION_STATE_SWITCHING_OVER && c.hold.attempt != 0:
		c.endHold(false) // the switchover ended without this replica
	}
}

func (c *capture) completeArm(ctx context.Context, migration string, last uint64) {
	for ctx.Err() == nil {
		err := c.waitBefore(ctx, last)
		var ts uint64
		if err == nil {
			ts, err = c.src.timestamp(ctx)
		}
		if err != nil {
			c.log.Warn("arming capture: will retry", slog.String("migration", migration), slog.Any("error", err))
			time.Sleep(time.Second)
			continue
		}
		c.mu.Lock()
		if c.armed == migration && c.armTs == 0 {
			c.armTs = ts
			c.log.Info("capture armed", slog.String("migration", migration), slog.Uint64("arm_timestamp", ts))
		}
		c.mu.Unlock()
		return
	}
}

// capture forwards one captured call (a unary Milvus call) to the source
// and, if the source acknowledged it, publishes its change before the
// client gets the reply. A change that cannot be published makes the
// call fail with UNAVAILABLE, never succeed.
func (c *capture) call(ss grpc.ServerStream, method, name string, first *frame) error {
	ctx := ss.Context()
	md, _ := metadata.FromIncomingContext(ctx)
	req, err := decodeRequest(name, first.b, md)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "zdm gateway: %v", err)
	}
	id, migration, after, err := c.begin(ctx)
	if errors.Is(err, errStopped) {
		return refuse(ss, method, refused("%s refused: migration %q from cluster %q is stopping sync, so the source takes no more writes; point clients at the target once it completes",
			name, migration, c.src.current()))
	}
	if err != nil {
		return status.FromContextError(err).Err()
	}
	defer c.end(id)
	if migration == "" {
		return c.src.relay(ss, method, first, md, nil)
	}
	// Hold the rows (or the collection) until the change is published.
	collection := req.database + "." + req.collection
	whole := req.op == eventspb.Operation_OPERATION_DDL
	var keys []milvusx.Key
	if !whole {
		pk, err := c.pk(ctx, req)
		if err != nil {
			return err
		}
		known := false
		if pk != nil {
			keys, known = req.keysOf(pk)
		}
		whole = !known
	}
	release := c.locks.lock(collection, keys, whole)
	defer release()

	var published error
	err = c.src.relay(ss, method, first, md, func(reply []byte) error {
		ev, ok, err := c.change(req, migration, method, first.b, reply, keys)
		if err != nil || !ok {
			return err // a failed call publishes nothing
		}
		ev.AfterSwitch = after
		evs, err := split(ev, req)
		if err != nil {
			published = err
			return err
		}
		published = c.record(ctx, evs)
		return published
	})
	if published != nil && streamFull(published) {
		c.failFull(ctx, migration, published)
	}
	if published != nil {
		c.log.Error("change not published; the client is told the write is unavailable",
			slog.String("migration", migration), slog.String("method", name), slog.String("collection", collection), slog.Any("error", published))
		// In the reply, not as a gRPC status: an SDK would resend the
		// write on UNAVAILABLE, and the source already has it.
		return refuse(ss, method, &refusal{codes.Unavailable, fmt.Sprintf(
			"%s reached the source but could not be recorded for migration %q: %v; it is on the source, so sending it again would write it twice", name, migration, published)})
	}
	if req.op == eventspb.Operation_OPERATION_DDL {
		c.forget(collection)
	}
	return err
}

// change builds the ChangeEvent of an acknowledged call; ok is false when
// the source refused the call.
func (c *capture) change(req *request, migration, method string, request, reply []byte, sent []milvusx.Key) (*eventspb.ChangeEvent, bool, error) {
	ev := &eventspb.ChangeEvent{MigrationId: migration, GatewayId: c.id, Database: req.database, Collection: req.collection,
		Partition: req.partition, Operation: req.op, Method: method, Request: request}
	if req.op == eventspb.Operation_OPERATION_DDL {
		var st commonpb.Status
		if err := proto.Unmarshal(reply, &st); err != nil {
			return nil, false, fmt.Errorf("decode %s reply: %w", req.name, err)
		}
		return ev, statusOK(&st), nil
	}
	var res milvuspb.MutationResult
	if err := proto.Unmarshal(reply, &res); err != nil {
		return nil, false, fmt.Errorf("decode %s reply: %w", req.name, err)
	}
	if !statusOK(res.GetStatus()) {
		return nil, false, nil
	}
	keys := replyKeys(res.GetIDs())
	if len(keys) == 0 {
		keys = sent // Milvus 2.3 names no key in a delete's reply
	}
	ev.PrimaryKeys, ev.CommitTimestamp = natsbus.KeysPB(keys), res.GetTimestamp()
	return ev, true, nil
}

// record numbers evs (the changes of one call, to one collection) and
// stores them on the change stream, returning once JetStream has acked
// them. Calls recording at the same time share messages: whoever finds no
// publish under way for the collection publishes everything queued for
// it, one message (ChangeBatch) at a time, so concurrent writers pay for
// one store and one ack between them instead of one each.
func (c *capture) record(ctx context.Context, evs []*eventspb.ChangeEvent) error {
	subject := natsbus.ChangeSubject(evs[0].GetMigrationId(), evs[0].GetDatabase(), evs[0].GetCollection())
	if evs[0].GetAfterSwitch() {
		subject = natsbus.SwitchedSubject(evs[0].GetMigrationId(), evs[0].GetDatabase(), evs[0].GetCollection())
	}
	p := &pending{evs: evs, done: make(chan error, 1)}
	c.mu.Lock()
	q := c.queues[subject]
	if q == nil {
		q = &queue{}
		c.queues[subject] = q
	}
	q.waiting = append(q.waiting, p)
	lead := !q.busy
	q.busy = true
	c.mu.Unlock()
	if lead {
		// The client's cancellation must not cut a publish whose write
		// the source already took.
		c.drain(context.WithoutCancel(ctx), subject, q)
	}
	return <-p.done
}

// queue holds the changes of one subject waiting to be published.
type queue struct {
	waiting []*pending
	busy    bool      // a caller is publishing them
	traced  time.Time // when a batch of the subject last had a span
}

// traceEvery is how often a batch of changes of one collection gets a
// span in its migration's trace (the first one always does), carried on
// the message to the applier's span: a sample that shows the path of a
// change without a span per write, and keeps a week of sync to about ten
// thousand spans per collection.
const traceEvery = time.Minute

type pending struct {
	evs  []*eventspb.ChangeEvent
	next int // first change not yet published
	done chan error
}

// maxBatchBytes bounds one message of the change stream, below NATS's
// default max_payload of 1 MiB.
const maxBatchBytes = 768 << 10

// drain publishes what q holds until it is empty. A call's changes go
// out in order, in as many messages as their size needs; the call learns
// the outcome once its last change is stored, or its first failure.
func (c *capture) drain(ctx context.Context, subject string, q *queue) {
	for {
		c.mu.Lock()
		if len(q.waiting) == 0 {
			q.busy = false
			c.mu.Unlock()
			return
		}
		batch := &eventspb.ChangeBatch{}
		var done []*pending // calls whose last change is in this batch
		partial := false    // the head call has changes left for later
		size := 0
		now := timestamppb.Now()
	fill:
		for len(q.waiting) > 0 {
			p := q.waiting[0]
			for p.next < len(p.evs) {
				ev := p.evs[p.next]
				n := proto.Size(ev)
				if len(batch.Changes) > 0 && size+n > maxBatchBytes {
					partial = p.next > 0
					break fill
				}
				c.seq++
				ev.Sequence, ev.EventId, ev.PublishTime = c.seq, fmt.Sprintf("%s-%d", c.id, c.seq), now
				batch.Changes, size, p.next = append(batch.Changes, ev), size+n, p.next+1
			}
			done, q.waiting = append(done, p), q.waiting[1:]
		}
		pctx, sp := c.sample(ctx, q, batch)
		c.mu.Unlock()
		pctx, cancel := context.WithTimeout(pctx, 10*time.Second)
		ack, err := natsbus.Publish(pctx, c.js, c.prop, subject, batch.GetChanges()[0].GetEventId(), batch)
		cancel()
		if sp != nil {
			if err == nil {
				sp.SetAttributes(attribute.Int64("zdm.stream_sequence", int64(ack.Sequence)))
			}
			telemetry.End(sp, err)
		}
		c.mu.Lock()
		if err == nil {
			c.streamSeq = max(c.streamSeq, ack.Sequence)
			if c.captured != nil {
				c.captured.WithLabelValues(batch.GetChanges()[0].GetMigrationId()).Add(float64(len(batch.GetChanges())))
			}
		} else if partial {
			// The call whose first changes failed publishes no more.
			done, q.waiting = append(done, q.waiting[0]), q.waiting[1:]
		}
		c.mu.Unlock()
		for _, p := range done {
			p.done <- err
		}
	}
}

// sample starts a span for batch, in its migration's trace, if q's last
// one is traceEvery old; nil if not. c.mu is held.
func (c *capture) sample(ctx context.Context, q *queue, batch *eventspb.ChangeBatch) (context.Context, trace.Span) {
	first, m := batch.GetChanges()[0], c.view.active
	if first.GetMigrationId() != m.GetMigrationId() || time.Since(q.traced) < traceEvery {
		return ctx, nil
	}
	q.traced = time.Now()
	return telemetry.StartMigrationSpan(ctx, c.tracer, m, "capture changes", telemetry.DatabaseKey.String(first.GetDatabase()),
		telemetry.CollectionKey.String(first.GetCollection()), attribute.Int("zdm.changes", len(batch.GetChanges())),
		attribute.String("zdm.gateway_id", c.id))
}

// streamFull recognises JetStream's refusal of a message by a stream
// at its byte limit, or a server out of storage.
func streamFull(err error) bool {
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "maximum bytes") || strings.Contains(s, "insufficient storage") || strings.Contains(s, "insufficient resources")
}

// failFull fails migration: its change stream cannot take more changes,
// and a change discarded would be a write lost on the target.
func (c *capture) failFull(ctx context.Context, migration string, err error) {
	ev := &eventspb.StageCompleted{EventId: "stream-full-" + migration, MigrationId: migration, Success: false,
		Code: eventspb.StageError_STAGE_ERROR_CHANGE_STREAM_FULL, Time: timestamppb.Now(),
		ErrorMessage: fmt.Sprintf("the change stream is full (%v), so writes to the source can no longer be captured; raise --change-max-bytes or the JetStream storage, and run the migration again", err)}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, perr := natsbus.Publish(pctx, c.js, c.prop, natsbus.EventSubject(migration, natsbus.EventStage), ev.GetEventId(), ev); perr != nil {
		c.log.Error("report the full change stream", slog.String("migration", migration), slog.Any("error", perr))
	}
}

// pk returns the primary key field of the request's collection, from a
// cache that DDL on the collection clears.
func (c *capture) pk(ctx context.Context, req *request) (*schemapb.FieldSchema, error) {
	name := req.database + "." + req.collection
	c.mu.Lock()
	f, ok := c.schemas[name]
	c.mu.Unlock()
	if ok {
		return f, nil
	}
	f, err := c.src.primaryKey(ctx, req.database, req.collection)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.schemas[name] = f
	c.mu.Unlock()
	return f, nil
}

func (c *capture) forget(collection string) {
	c.mu.Lock()
	delete(c.schemas, collection)
	c.mu.Unlock()
}

// resolve publishes one resolved timestamp: R is allocated on the source
// (on a server without AllocTimestamp, taken from the clock, the promise
// then holding in this replica's publish order), every write in flight
// at that moment is waited for, and R is stored with the stream sequence
// of the last change published.
func (c *capture) resolve(ctx context.Context) error {
	c.mu.Lock()
	armed := c.armed
	c.mu.Unlock()
	var r uint64
	if armed != "" {
		var err error
		if r, err = c.src.timestamp(ctx); err != nil {
			return err
		}
	}
	// Writes refused from now on: once the older ones end, none is left.
	c.mu.Lock()
	last, stopped := c.nextCall, c.stopped != "" && c.stopped == c.armed
	c.mu.Unlock()
	if err := c.waitBefore(ctx, last); err != nil {
		return err
	}
	c.mu.Lock()
	st := c.state()
	st.WritesStopped = stopped && c.stopped == c.armed
	if c.armed == armed && c.armTs != 0 {
		st.ResolvedTimestamp = r
	}
	c.mu.Unlock()
	return c.put(ctx, st)
}

// state is this replica's entry in the gateways bucket, without a
// resolved timestamp. c.mu is held.
func (c *capture) state() *eventspb.ResolvedTimestamp {
	st := &eventspb.ResolvedTimestamp{GatewayId: c.id, ClusterId: c.src.current(), Addr: c.addr, TargetViewAddr: c.viewAddr,
		MigrationId: c.armed, ArmTimestamp: c.armTs, LastSequence: c.seq, LastStreamSequence: c.streamSeq, Time: timestamppb.Now(),
		Switched: c.armed != "" && c.switched == c.armed}
	if c.released.attempt != 0 && c.released.migration == c.armed {
		st.ReleasedAttempt, st.ReleaseTime, st.HeldWrites = c.released.attempt, timestamppb.New(c.released.end), c.released.writes
		st.HoldTime = timestamppb.New(c.released.start)
	}
	if c.hold.attempt != 0 && c.hold.ready {
		// The hold under way, not the last one released.
		st.HoldAttempt, st.HoldTime = c.hold.attempt, timestamppb.New(c.hold.start)
	}
	return st
}

// put stores st as this replica's entry.
func (c *capture) put(ctx context.Context, st *eventspb.ResolvedTimestamp) error {
	st.EventId = fmt.Sprintf("%s-r%d", c.id, st.GetResolvedTimestamp())
	b, err := proto.Marshal(st)
	if err != nil {
		return err
	}
	_, err = c.gateways.Put(ctx, natsbus.KeyToken(c.id), b)
	return err
}

// run publishes resolved timestamps until ctx ends, and removes this
// replica's entry when it does.
func (c *capture) run(ctx context.Context) {
	t := time.NewTicker(resolveEvery)
	defer t.Stop()
	failing := false
	for {
		err := c.resolve(ctx)
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			c.log.Warn("resolved timestamp not published; lag rises until it is", slog.Any("error", err))
			failing = true
		case err == nil && failing:
			c.log.Info("resolved timestamps published again")
			failing = false
		}
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			// Gone from the bucket now rather than at its TTL; if this
			// fails the entry expires all the same.
			_ = c.gateways.Delete(dctx, natsbus.KeyToken(c.id))
			cancel()
			return
		case <-t.C:
		}
	}
}

// statusOK reads a Milvus status the way the SDKs do: code when set,
// else the legacy error_code.
func statusOK(s *commonpb.Status) bool {
	//lint:ignore SA1019 servers before 2.3 set only error_code.
	return s.GetCode() == 0 && s.GetErrorCode() == commonpb.ErrorCode_Success
}
