package copier

import (
	"context"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	copierpb "github.com/zdm-io/zdm/proto/zdm/copier/v1"
	eventspb "github.com/zdm-io/zdm/proto/zdm/events/v1"
)

// Status is what a copier process's workers are doing, for
// GetCopierStatus. A nil Status records nothing.
type Status struct {
	mu     sync.Mutex
	active map[string]*copierpb.ActiveUnit // by worker
	done   int64
}

// NewStatus returns an empty status.
func NewStatus() *Status { return &Status{active: map[string]*copierpb.ActiveUnit{}} }

func (s *Status) begin(worker string, u *eventspb.WorkUnit) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.active[worker] = &copierpb.ActiveUnit{MigrationId: u.GetMigrationId(), UnitId: u.GetUnitId(),
		Database: u.GetDatabase(), Collection: u.GetCollection(), StartTime: timestamppb.Now()}
}

func (s *Status) progress(worker string, rows, bytes int64) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.active[worker]; a != nil {
		a.Rows, a.Bytes = rows, bytes
	}
}

func (s *Status) end(worker string, done bool) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.active, worker)
	if done {
		s.done++
	}
}

// GetCopierStatus implements copierpb.SnapshotCopierServiceServer.
func (c *Copier) GetCopierStatus(context.Context, *copierpb.GetCopierStatusRequest) (*copierpb.GetCopierStatusResponse, error) {
	c.status.mu.Lock()
	defer c.status.mu.Unlock()
	resp := &copierpb.GetCopierStatusResponse{CopierId: c.cfg.ID, UnitsDone: c.status.done}
	for _, a := range c.status.active {
		resp.ActiveUnits = append(resp.ActiveUnits, proto.Clone(a).(*copierpb.ActiveUnit))
	}
	slices.SortFunc(resp.ActiveUnits, func(a, b *copierpb.ActiveUnit) int { return strings.Compare(a.GetUnitId(), b.GetUnitId()) })
	return resp, nil
}
