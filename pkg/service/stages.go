package service

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/zdm-io/zdm/pkg/natsbus"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// Staged is implemented by a service that carries out migration stages:
// the binary announces them in natsbus.StagesBucket while it runs.
type Staged interface {
	// Stages are the stages the service carries out.
	Stages() []zdmpb.StageKind
}

// Idle is implemented by a service that runs but serves nothing yet: the
// binary reports its health entries NOT_SERVING.
type Idle interface {
	// Idle reports whether the service serves nothing.
	Idle() bool
}

// announceEvery renews a process's stage keys well within the bucket's
// TTL.
const announceEvery = 5 * time.Second

// Announce keeps stages announced as served by this process in
// natsbus.StagesBucket until ctx is done, then withdraws them. It blocks;
// a failed renewal is logged and retried at the next tick.
func Announce(ctx context.Context, kv jetstream.KeyValue, stages []zdmpb.StageKind, logger *slog.Logger) {
	instance := instanceID()
	put := func() {
		for _, s := range stages {
			if _, err := kv.PutString(ctx, natsbus.StageKey(s, instance), time.Now().UTC().Format(time.RFC3339)); err != nil && ctx.Err() == nil {
				logger.WarnContext(ctx, "announce stage", slog.String("stage", s.String()), slog.Any("error", err))
			}
		}
	}
	put()
	t := time.NewTicker(announceEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			defer cancel()
			for _, s := range stages {
				// Best effort: a key left behind expires with the TTL.
				_ = kv.Delete(wctx, natsbus.StageKey(s, instance))
			}
			return
		case <-t.C:
			put()
		}
	}
}

// instanceID names this process among the servers of a stage: host, pid
// and a random suffix, as a KV key token.
func instanceID() string {
	host, _ := os.Hostname()
	b := make([]byte, 3)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux
	return natsbus.KeyToken(fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b)))
}

// LiveStages finds the stages live processes serve, from
// natsbus.StagesBucket.
type LiveStages struct {
	KV jetstream.KeyValue
}

// Serves reports whether a live process serves stage.
func (l LiveStages) Serves(ctx context.Context, stage zdmpb.StageKind) (bool, error) {
	keys, err := l.KV.ListKeysFiltered(ctx, natsbus.StageKeys(stage))
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("stages served: %w", err)
	}
	defer func() { _ = keys.Stop() }() // the lister only reads: stopping it has nothing to undo
	for range keys.Keys() {
		return true, nil
	}
	return false, nil
}
