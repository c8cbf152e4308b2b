package natsbus

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// The bus protocol: every subject zdm publishes on is built here, and
// every KV bucket it keeps is declared here with its configuration. No
// service formats a subject or configures a bucket itself.
// docs/architecture.md has the table of who writes and reads each.

// Subject spaces, one per stream (see Streams).
const (
	commandSpace = "zdm.cmd"
	eventSpace   = "zdm.evt"
	workSpace    = "zdm.work"
	changeSpace  = "zdm.chg"
)

// EventKind is the kind of a migration event, the last token of its
// subject zdm.evt.<migration>.<kind>.
type EventKind string

// Event kinds and the message each carries.
const (
	// EventStage carries eventspb.StageCompleted.
	EventStage EventKind = "stage"
	// EventLag carries eventspb.LagReport.
	EventLag EventKind = "lag"
	// EventPlan carries eventspb.CopyPlanned.
	EventPlan EventKind = "plan"
	// EventUnit carries eventspb.WorkUnitDone.
	EventUnit EventKind = "unit"
	// EventProgress carries eventspb.Progress.
	EventProgress EventKind = "progress"
	// EventFailed carries eventspb.WorkFailed.
	EventFailed EventKind = "failed"
	// EventGateway carries eventspb.GatewayChange.
	EventGateway EventKind = "gateway"
	// EventNotice carries eventspb.NotificationReport.
	EventNotice EventKind = "notice"
)

// EventSubject is where events of kind k about migration are published.
func EventSubject(migration string, k EventKind) string {
	return eventSpace + "." + migration + "." + string(k)
}

// EventFilter matches the events of kind k about every migration.
func EventFilter(k EventKind) string { return eventSpace + ".*." + string(k) }

// EventKindOf is the kind of an event subject.
func EventKindOf(subject string) EventKind {
	return EventKind(subject[strings.LastIndexByte(subject, '.')+1:])
}

// CommandSubject is where the coordinator sends migration's commands for
// stage (STAGE_KIND_UNSPECIFIED: a command to every stage, a cancel).
func CommandSubject(migration string, stage zdmpb.StageKind) string {
	return commandSpace + "." + migration + "." + StageToken(stage)
}

// CommandFilter matches the commands for stage of every migration.
func CommandFilter(stage zdmpb.StageKind) string { return commandSpace + ".*." + StageToken(stage) }

// WorkSubject is the copy work queue of migration.
func WorkSubject(migration string) string { return workSpace + "." + migration }

// ChangeSubject is where a gateway publishes migration's captured changes
// to collection of database; collection is empty for a database's own
// DDL. Milvus names are letters, digits and '_', so they are tokens as
// they are.
func ChangeSubject(migration, database, collection string) string {
	s := changeSpace + "." + migration + "." + KeyToken(database)
	if collection != "" {
		s += "." + KeyToken(collection)
	}
	return s
}

// ChangeFilter matches every captured change of migration that the
// applier replays.
func ChangeFilter(migration string) string { return changeSpace + "." + migration + ".>" }

// switchedSpace holds the changes written to a migration's target after
// its switchover. '_' never appears in a migration ID, so it cannot
// collide with one.
const switchedSpace = changeSpace + "._switched"

// SwitchedSubject is where a gateway records a write it sent to
// migration's target after the switchover, for the final verification to
// leave its keys out; the applier never reads it.
func SwitchedSubject(migration, database, collection string) string {
	return switchedSpace + "." + migration + "." + KeyToken(database) + "." + KeyToken(collection)
}

// SwitchedFilter matches the writes recorded after migration's switchover.
func SwitchedFilter(migration string) string { return switchedSpace + "." + migration + ".>" }

// StageToken is a stage's subject token, for example "copy_data"; "all"
// for STAGE_KIND_UNSPECIFIED.
func StageToken(k zdmpb.StageKind) string {
	if k == zdmpb.StageKind_STAGE_KIND_UNSPECIFIED {
		return "all"
	}
	return strings.ToLower(strings.TrimPrefix(k.String(), "STAGE_KIND_"))
}

// Bucket is a KV bucket zdm keeps, with its configuration.
type Bucket struct {
	// Name of the bucket.
	Name string
	// Description, also shown by `nats kv ls`.
	Description string
	// History is how many revisions of a key are kept (1 when 0).
	History uint8
	// TTL expires keys not written for that long; 0 keeps them.
	TTL time.Duration
}

// kvHistory is how many revisions watched buckets keep, so a watcher that
// reconnects can replay what it missed.
const kvHistory = 64

// The buckets.
var (
	// MigrationsBucket holds zdm.v1.Migration by migration ID. Written by
	// the coordinator, watched by WatchMigration.
	MigrationsBucket = Bucket{Name: "zdm_migrations", Description: "zdm migrations, by ID", History: kvHistory}
	// ClustersBucket holds coordinator.v1.ClusterRecord by cluster ID:
	// the registry, connections included.
	ClustersBucket = Bucket{Name: "zdm_clusters", Description: "zdm cluster registry, by ID", History: kvHistory}
	// CopyPlansBucket holds coordinator.v1.CopyRecord by migration ID: the
	// copy's units still to do and its progress, as the coordinator sees it.
	CopyPlansBucket = Bucket{Name: "zdm_copy_plans", Description: "zdm copy progress, by migration", History: kvHistory}
	// CopyControlsBucket holds events.v1.CopyControl by migration ID: pause
	// and throttle, written by the coordinator and watched by copiers.
	CopyControlsBucket = Bucket{Name: "zdm_copy_controls", Description: "zdm copy pause and throttle, by migration", History: kvHistory}
	// CheckpointsBucket holds events.v1.WorkUnitCheckpoint by unit ID,
	// written by the copier holding the unit.
	CheckpointsBucket = Bucket{Name: "zdm_copy_checkpoints", Description: "zdm copy unit checkpoints, by unit"}
	// UnitPlansBucket holds copier.v1.TablePlan by table of a migration:
	// the units a table was split into, stored before they are published.
	UnitPlansBucket = Bucket{Name: "zdm_copy_units", Description: "zdm copy unit plans, by table"}
	// CopiersBucket has one key per live copier process, kept alive by it
	// and expiring when it stops: the throttle is shared among them.
	CopiersBucket = Bucket{Name: "zdm_copiers", Description: "zdm live copier processes", TTL: 15 * time.Second}
	// StagesBucket has one key per stage and live process that carries it
	// out (<stage>.<instance>), kept alive by the process and expiring
	// when it stops: the coordinator refuses a migration whose stages no
	// live process serves.
	StagesBucket = Bucket{Name: "zdm_stages", Description: "zdm stages served by live processes", TTL: 15 * time.Second}
	// GatewaysBucket holds events.v1.ResolvedTimestamp by gateway replica
	// ID: each live replica's latest promise, written at least every
	// 200 ms and expiring when the replica stops.
	GatewaysBucket = Bucket{Name: "zdm_gateways", Description: "zdm live gateway replicas and their resolved timestamps", TTL: 5 * time.Second}
	// AppliedBucket holds events.v1.AppliedPosition by migration ID,
	// written by the applier; the lag monitor derives lag from it.
	AppliedBucket = Bucket{Name: "zdm_applied", Description: "zdm applier positions and watermarks, by migration"}
	// AppliersBucket has one key per migration being applied, naming the
	// process that applies it; kept alive by that process and expiring
	// when it stops, so another takes over.
	AppliersBucket = Bucket{Name: "zdm_appliers", Description: "zdm applier leases, by migration", TTL: 6 * time.Second}
	// SwitchoversBucket holds events.v1.SwitchoverDecision by
	// SwitchoverKey: created once per attempt by whoever decides first;
	// every gateway replica follows it. Beside each decision, HoldKey
	// holds the ID of the applier that caught up (see HoldKey).
	SwitchoversBucket = Bucket{Name: "zdm_switchovers", Description: "zdm switchover decisions, by migration and attempt"}
	// NoticesBucket holds zdm.v1.NotificationDelivery by NoticeKey: the
	// lag monitor claims a notice there before sending it and records its
	// delivery after, so no notice goes out twice.
	NoticesBucket = Bucket{Name: "zdm_notices", Description: "zdm notification deliveries, by migration, notice and recipient"}
)

// SwitchoverKey is the key in SwitchoversBucket of migration's attempt.
func SwitchoverKey(migration string, attempt int32) string {
	return fmt.Sprintf("%s.%d", migration, attempt)
}

// holdSuffix ends every HoldKey; no SwitchoverKey ends so, as its last
// token is a number.
const holdSuffix = ".hold"

// HoldKey is the key in SwitchoversBucket by which the applier tells the
// gateway replicas of migration's attempt that it has caught up, so they
// hold writes now.
func HoldKey(migration string, attempt int32) string {
	return SwitchoverKey(migration, attempt) + holdSuffix
}

// IsHoldKey tells a HoldKey from a decision's SwitchoverKey.
func IsHoldKey(key string) bool { return strings.HasSuffix(key, holdSuffix) }

// ParseHoldKey is the inverse of HoldKey. Errors: the key is not a
// HoldKey, or names no attempt.
func ParseHoldKey(key string) (migration string, attempt int32, err error) {
	rest, ok := strings.CutSuffix(key, holdSuffix)
	i := strings.LastIndexByte(rest, '.')
	if !ok || i <= 0 {
		return "", 0, fmt.Errorf("switchover key %q is not <migration>.<attempt>%s", key, holdSuffix)
	}
	n, err := strconv.ParseInt(rest[i+1:], 10, 32)
	if err != nil {
		return "", 0, fmt.Errorf("switchover key %q: attempt: %w", key, err)
	}
	return rest[:i], int32(n), nil
}

// NoticeKey is the key in NoticesBucket of notice (a token such as
// COMPLETED) to recipient number i of channel ("email", "webhook").
func NoticeKey(migration, notice, channel string, i int) string {
	return fmt.Sprintf("%s.%s.%s.%d", migration, KeyToken(notice), KeyToken(channel), i)
}

// NoticesTable is kv, the opened NoticesBucket, as a table of
// zdm.v1.NotificationDelivery.
func NoticesTable(kv jetstream.KeyValue) *Table[*zdmpb.NotificationDelivery] {
	return &Table[*zdmpb.NotificationDelivery]{kv: kv, kind: "notice", new: func() *zdmpb.NotificationDelivery { return &zdmpb.NotificationDelivery{} }}
}

// UnitPlanKey is the key in UnitPlansBucket of a table (collection and
// partition part; empty for the whole collection) of database db, for
// migration. The names are hashed, so the key is valid whatever they
// hold.
func UnitPlanKey(migration, db, collection, part string) string {
	h := sha256.Sum256([]byte(db + "\x00" + collection + "\x00" + part))
	return migration + "." + hex.EncodeToString(h[:6])
}

// UnitID is the ID of unit i of a table planned under UnitPlanKey: the
// work unit's message ID and its key in CheckpointsBucket. It is stable,
// so a unit planned again after a crash is the same unit.
func UnitID(migration, db, collection, part string, i int) string {
	return fmt.Sprintf("%s.%d", UnitPlanKey(migration, db, collection, part), i)
}

// StageKey is the key in StagesBucket of stage served by instance.
func StageKey(stage zdmpb.StageKind, instance string) string {
	return StageToken(stage) + "." + instance
}

// StageKeys matches the keys of every instance serving stage.
func StageKeys(stage zdmpb.StageKind) string { return StageToken(stage) + ".>" }

// Buckets lists every bucket, for documentation and tests.
func Buckets() []Bucket {
	return []Bucket{MigrationsBucket, ClustersBucket, CopyPlansBucket, CopyControlsBucket, CheckpointsBucket, UnitPlansBucket, CopiersBucket, StagesBucket,
		GatewaysBucket, AppliedBucket, AppliersBucket, SwitchoversBucket, NoticesBucket}
}

// Stream is the name of the JetStream stream that holds the bucket.
func (b Bucket) Stream() string { return "KV_" + b.Name }

// Open creates the bucket, or updates its configuration, and returns it.
// It is safe to call from any number of processes at once.
func (b Bucket) Open(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: b.Name, Description: b.Description, History: max(b.History, 1), TTL: b.TTL,
		Storage: jetstream.FileStorage, Replicas: max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("KV bucket %s: %w", b.Name, err)
	}
	return kv, nil
}

// MigrationCommands matches every command of migration.
func MigrationCommands(migration string) string { return commandSpace + "." + migration + ".>" }

// KeyToken makes s, a process or copier name, one token of a KV key:
// every character but letters, digits, '-', '_' and '=' becomes '_' (a
// '.' would split it in two).
func KeyToken(s string) string {
	b := []byte(s)
	for i, ch := range b {
		switch {
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z', ch >= '0' && ch <= '9', ch == '-', ch == '_', ch == '=':
		default:
			b[i] = '_'
		}
	}
	return string(b)
}

// Gateways returns the latest state of every live gateway replica, read
// from kv, the opened GatewaysBucket.
func Gateways(ctx context.Context, kv jetstream.KeyValue) ([]*eventspb.ResolvedTimestamp, error) {
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("gateways: %w", err)
	}
	var out []*eventspb.ResolvedTimestamp
	for k := range lister.Keys() {
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // expired since listed: the replica stopped
		}
		if err != nil {
			return nil, fmt.Errorf("gateway %s: %w", k, err)
		}
		g := &eventspb.ResolvedTimestamp{}
		if err := proto.Unmarshal(e.Value(), g); err != nil {
			// Not a replica zdm can read (a writer of another version,
			// or a stray key): which migration it serves is unknown, so
			// failing here would stall the watermark, drain, arming and
			// CreateMigration of every migration for as long as the
			// entry lives. It counts as no replica; its TTL removes it
			// once its writer stops.
			continue
		}
		out = append(out, g)
	}
	return out, nil
}
