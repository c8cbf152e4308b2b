package coordinator

import (
	"google.golang.org/protobuf/proto"

	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// cloneMigration deep-copies m, so a transition can be tried on a copy and
// thrown away when the write loses a revision race.
func cloneMigration(m *zdmpb.Migration) *zdmpb.Migration {
	return proto.Clone(m).(*zdmpb.Migration)
}
