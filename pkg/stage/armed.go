package stage

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/zdm-io/zdm/pkg/natsbus"
)

// ArmWait bounds how long a ZERO_DOWNTIME migration waits for a gateway
// in front of its source to arm capture.
const ArmWait = 2 * time.Minute

// WaitArmed waits until every live gateway replica in front of cluster
// has armed capture for migration, and at least one has, and returns the
// latest arm point T0. Whatever the source acknowledges after T0 is on
// the change stream, so the target's schema and snapshot must be read
// after this returns. It fails after ArmWait, saying how to start a
// gateway.
func WaitArmed(ctx context.Context, js jetstream.JetStream, replicas int, cluster, migration string) (uint64, error) {
	kv, err := natsbus.GatewaysBucket.Open(ctx, js, replicas)
	if err != nil {
		return 0, err
	}
	deadline := time.Now().Add(ArmWait)
	for {
		t0, armed, waiting, err := armState(ctx, kv, cluster, migration)
		if err != nil {
			return 0, err
		}
		if armed > 0 && waiting == 0 {
			return t0, nil
		}
		if time.Now().After(deadline) {
			if armed+waiting == 0 {
				return 0, fmt.Errorf("no zdm gateway fronts source cluster %q, so writes to it cannot be captured: start zdm with --gateway-cluster %s, point applications at its --gateway-addr, and create the migration again", cluster, cluster)
			}
			return 0, fmt.Errorf("%d of %d gateways in front of cluster %q did not arm capture for migration %q within %s", waiting, armed+waiting, cluster, migration, ArmWait)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func armState(ctx context.Context, kv jetstream.KeyValue, cluster, migration string) (t0 uint64, armed, waiting int, err error) {
	gws, err := natsbus.Gateways(ctx, kv)
	if err != nil {
		return 0, 0, 0, err
	}
	for _, g := range gws {
		if g.GetClusterId() != cluster {
			continue
		}
		if g.GetMigrationId() == migration && g.GetArmTimestamp() != 0 {
			armed++
			t0 = max(t0, g.GetArmTimestamp())
		} else {
			waiting++
		}
	}
	return t0, armed, waiting, nil
}
