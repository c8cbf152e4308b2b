package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	lagpb "github.com/zdm-io/zdm/proto/zdm/lag/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

func (c *client) cluster(ctx context.Context, sub string, args []string) error {
	switch sub {
	case "add":
		fs := c.flags("cluster add")
		endpoint := fs.String("endpoint", "", "host:port of the cluster's Milvus")
		user := fs.String("user", "", "Milvus user")
		password := fs.String("password", "", "Milvus password; prefer ZDM_PASSWORD")
		token := fs.String("token", "", "Milvus token (instead of user and password); prefer ZDM_TOKEN")
		useTLS := fs.Bool("cluster-tls", false, "the cluster speaks TLS")
		name := fs.String("name", "", "display name")
		pos, err := c.parse(fs, args, 1, "a cluster ID: zdm cluster add ID --endpoint host:port")
		if err != nil {
			return err
		}
		conn := &zdmpb.ClusterConnection{Endpoint: *endpoint, Tls: &zdmpb.TlsConfig{Enabled: *useTLS}}
		switch {
		case *token != "":
			conn.Auth = &zdmpb.ClusterConnection_Token{Token: *token}
		case *user != "":
			conn.Auth = &zdmpb.ClusterConnection_UserPassword{UserPassword: &zdmpb.UserPassword{Username: *user, Password: *password}}
		}
		return c.call(ctx, func(ctx context.Context) error {
			resp, err := zdmpb.NewClusterServiceClient(c.conn).RegisterCluster(ctx, &zdmpb.RegisterClusterRequest{ClusterId: pos[0], DisplayName: *name, Connection: conn})
			if err != nil || c.output == "json" {
				return c.jsonOr(resp, err)
			}
			return c.printCluster(resp.GetCluster())
		})
	case "list":
		fs := c.flags("cluster list")
		if _, err := c.parse(fs, args, 0, "no argument"); err != nil {
			return err
		}
		return c.call(ctx, func(ctx context.Context) error {
			clusters, err := allPages(func(token string) ([]*zdmpb.Cluster, string, error) {
				page, err := zdmpb.NewClusterServiceClient(c.conn).ListClusters(ctx, &zdmpb.ListClustersRequest{PageToken: token})
				return page.GetClusters(), page.GetNextPageToken(), err
			})
			if err != nil {
				return err
			}
			resp := &zdmpb.ListClustersResponse{Clusters: clusters}
			if c.output == "json" {
				return c.json(resp)
			}
			w := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tENDPOINT\tVERSION\tLOCK\tMIGRATION")
			for _, cl := range resp.GetClusters() {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", cl.GetClusterId(), cl.GetEndpoint(), cl.GetMilvusVersion(),
					trim(cl.GetLockState().String(), "LOCK_STATE_"), cl.GetLockedByMigrationId())
			}
			return w.Flush()
		})
	case "show", "rm":
		fs := c.flags("cluster " + sub)
		pos, err := c.parse(fs, args, 1, "a cluster ID")
		if err != nil {
			return err
		}
		return c.call(ctx, func(ctx context.Context) error {
			cs := zdmpb.NewClusterServiceClient(c.conn)
			if sub == "rm" {
				resp, err := cs.DeregisterCluster(ctx, &zdmpb.DeregisterClusterRequest{ClusterId: pos[0]})
				if err != nil || c.output == "json" {
					return c.jsonOr(resp, err)
				}
				_, err = fmt.Fprintf(c.out, "cluster %s removed\n", pos[0])
				return err
			}
			resp, err := cs.GetCluster(ctx, &zdmpb.GetClusterRequest{ClusterId: pos[0]})
			if err != nil || c.output == "json" {
				return c.jsonOr(resp, err)
			}
			return c.printCluster(resp.GetCluster())
		})
	}
	return usagef("zdm cluster: want add, list, show or rm")
}

func (c *client) printCluster(cl *zdmpb.Cluster) error {
	w := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "cluster\t%s\n", cl.GetClusterId())
	fmt.Fprintf(w, "endpoint\t%s\n", cl.GetEndpoint())
	fmt.Fprintf(w, "milvus\t%s\n", cl.GetMilvusVersion())
	fmt.Fprintf(w, "auth\t%s\n", trim(cl.GetAuthKind().String(), "AUTH_KIND_"))
	fmt.Fprintf(w, "tls\t%t\n", cl.GetTlsEnabled())
	lock := trim(cl.GetLockState().String(), "LOCK_STATE_")
	if m := cl.GetLockedByMigrationId(); m != "" {
		lock += " by " + m
	}
	fmt.Fprintf(w, "lock\t%s\n", lock)
	return w.Flush()
}

// jsonOr prints resp as JSON, or returns err.
func (c *client) jsonOr(resp proto.Message, err error) error {
	if err != nil {
		return err
	}
	return c.json(resp)
}

func (c *client) migrate(ctx context.Context, sub string, args []string) error {
	mig := func() zdmpb.MigrationServiceClient { return zdmpb.NewMigrationServiceClient(c.conn) }
	// one runs a call on migration ID and prints the migration it returns.
	one := func(name string, setup func(fs *flag.FlagSet) func(ctx context.Context, id string) (*zdmpb.Migration, error)) error {
		fs := c.flags("migrate " + name)
		call := setup(fs)
		pos, err := c.parse(fs, args, 1, "a migration ID")
		if err != nil {
			return err
		}
		return c.call(ctx, func(ctx context.Context) error {
			m, err := call(ctx, pos[0])
			if err != nil {
				return err
			}
			if c.output == "json" {
				return c.json(m)
			}
			return printMigration(c.out, m)
		})
	}
	switch sub {
	case "create":
		fs := c.flags("migrate create")
		typ := fs.String("type", "zero-downtime", "zero-downtime or offline")
		src := fs.String("source", "", "registered source cluster")
		tgt := fs.String("target", "", "registered target cluster (empty)")
		id := fs.String("id", "", "migration ID; empty lets zdm choose one")
		lag := fs.Duration("lag-threshold", 0, "lag at which the migration is ready to finalise (default 10s)")
		maxSync := fs.Duration("max-sync-duration", 0, "longest sync before the migration fails (default 168h)")
		unitRows := fs.Int64("work-unit-rows", 0, "rows per copy work unit (default 100000)")
		emails := fs.String("notify-email", "", "comma-separated addresses to notify")
		hooks := fs.String("notify-webhook", "", "comma-separated webhook URLs to notify")
		watch := fs.Bool("watch", false, "watch the migration once created")
		if _, err := c.parse(fs, args, 0, "flags only: zdm migrate create --source S --target T"); err != nil {
			return err
		}
		t := map[string]zdmpb.MigrationType{"zero-downtime": zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME, "offline": zdmpb.MigrationType_MIGRATION_TYPE_OFFLINE}[*typ]
		if t == 0 {
			return usagef("--type %q: want zero-downtime or offline", *typ)
		}
		opts := &zdmpb.MigrationOptions{WorkUnitRows: *unitRows, Notifications: &zdmpb.Notifications{Emails: list(*emails), WebhookUrls: list(*hooks)}}
		if *lag != 0 {
			opts.LagThreshold = durationpb.New(*lag)
		}
		if *maxSync != 0 {
			opts.MaxSyncDuration = durationpb.New(*maxSync)
		}
		var created *zdmpb.Migration
		err := c.call(ctx, func(ctx context.Context) error {
			resp, err := mig().CreateMigration(ctx, &zdmpb.CreateMigrationRequest{MigrationId: *id, Type: t, SourceClusterId: *src, TargetClusterId: *tgt, Options: opts})
			if err != nil {
				return err
			}
			created = resp.GetMigration()
			if *watch {
				return nil
			}
			if c.output == "json" {
				return c.json(created)
			}
			return printMigration(c.out, created)
		})
		if err != nil || !*watch {
			return err
		}
		return c.watch(ctx, created.GetMigrationId())
	case "list":
		fs := c.flags("migrate list")
		only := fs.String("state", "", "only migrations in this state, for example SYNCING")
		cluster := fs.String("cluster", "", "only migrations of this cluster")
		if _, err := c.parse(fs, args, 0, "no argument"); err != nil {
			return err
		}
		req := &zdmpb.ListMigrationsRequest{ClusterId: *cluster}
		if *only != "" {
			v, ok := zdmpb.MigrationState_value["MIGRATION_STATE_"+strings.ToUpper(*only)]
			if !ok {
				return usagef("--state %q: not a migration state", *only)
			}
			req.States = []zdmpb.MigrationState{zdmpb.MigrationState(v)}
		}
		return c.call(ctx, func(ctx context.Context) error {
			migrations, err := allPages(func(token string) ([]*zdmpb.Migration, string, error) {
				req.PageToken = token
				page, err := mig().ListMigrations(ctx, req)
				return page.GetMigrations(), page.GetNextPageToken(), err
			})
			if err != nil {
				return err
			}
			resp := &zdmpb.ListMigrationsResponse{Migrations: migrations}
			if c.output == "json" {
				return c.json(resp)
			}
			w := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tTYPE\tSTATE\tSOURCE\tTARGET\tCREATED")
			for _, m := range resp.GetMigrations() {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", m.GetMigrationId(), trim(m.GetType().String(), "MIGRATION_TYPE_"), state(m),
					m.GetSourceClusterId(), m.GetTargetClusterId(), m.GetCreateTime().AsTime().Local().Format(time.DateTime))
			}
			return w.Flush()
		})
	case "show":
		return one("show", func(*flag.FlagSet) func(context.Context, string) (*zdmpb.Migration, error) {
			return func(ctx context.Context, id string) (*zdmpb.Migration, error) {
				resp, err := mig().GetMigration(ctx, &zdmpb.GetMigrationRequest{MigrationId: id})
				return resp.GetMigration(), err
			}
		})
	case "watch":
		fs := c.flags("migrate watch")
		pos, err := c.parse(fs, args, 1, "a migration ID")
		if err != nil {
			return err
		}
		return c.watch(ctx, pos[0])
	case "stop-sync":
		return one("stop-sync", func(fs *flag.FlagSet) func(context.Context, string) (*zdmpb.Migration, error) {
			confirm := fs.Bool("confirm-writes-stopped", false, "confirm that no more writes reach the source")
			return func(ctx context.Context, id string) (*zdmpb.Migration, error) {
				resp, err := mig().StopSync(ctx, &zdmpb.StopSyncRequest{MigrationId: id, ConfirmWritesStopped: *confirm})
				return resp.GetMigration(), err
			}
		})
	case "switchover":
		return one("switchover", func(fs *flag.FlagSet) func(context.Context, string) (*zdmpb.Migration, error) {
			pause := fs.Duration("max-write-pause", 0, "longest write pause (default 1s)")
			return func(ctx context.Context, id string) (*zdmpb.Migration, error) {
				req := &zdmpb.SwitchoverRequest{MigrationId: id}
				if *pause != 0 {
					req.MaxWritePause = durationpb.New(*pause)
				}
				resp, err := mig().Switchover(ctx, req)
				return resp.GetMigration(), err
			}
		})
	case "cancel":
		return one("cancel", func(fs *flag.FlagSet) func(context.Context, string) (*zdmpb.Migration, error) {
			reason := fs.String("reason", "", "why, for the history")
			return func(ctx context.Context, id string) (*zdmpb.Migration, error) {
				resp, err := mig().CancelMigration(ctx, &zdmpb.CancelMigrationRequest{MigrationId: id, Reason: *reason})
				return resp.GetMigration(), err
			}
		})
	case "pause":
		return one("pause", func(*flag.FlagSet) func(context.Context, string) (*zdmpb.Migration, error) {
			return func(ctx context.Context, id string) (*zdmpb.Migration, error) {
				resp, err := mig().PauseMigration(ctx, &zdmpb.PauseMigrationRequest{MigrationId: id})
				return resp.GetMigration(), err
			}
		})
	case "resume":
		return one("resume", func(*flag.FlagSet) func(context.Context, string) (*zdmpb.Migration, error) {
			return func(ctx context.Context, id string) (*zdmpb.Migration, error) {
				resp, err := mig().ResumeMigration(ctx, &zdmpb.ResumeMigrationRequest{MigrationId: id})
				return resp.GetMigration(), err
			}
		})
	case "throttle":
		return one("throttle", func(fs *flag.FlagSet) func(context.Context, string) (*zdmpb.Migration, error) {
			rows := fs.Int64("rows-per-s", 0, "rows per second across all copiers; 0 for no limit")
			bytes := fs.Int64("bytes-per-s", 0, "bytes per second across all copiers; 0 for no limit")
			return func(ctx context.Context, id string) (*zdmpb.Migration, error) {
				resp, err := mig().SetThrottle(ctx, &zdmpb.SetThrottleRequest{MigrationId: id,
					Throttle: &zdmpb.Throttle{MaxRowsPerSecond: *rows, MaxBytesPerSecond: *bytes}})
				return resp.GetMigration(), err
			}
		})
	}
	return usagef("zdm migrate: want create, list, show, watch, stop-sync, switchover, cancel, pause, resume or throttle")
}

// verify compares two clusters, registered or not, through the lag
// monitor; it fails with ExitState when they differ.
func (c *client) verify(ctx context.Context, args []string) error {
	fs := c.flags("verify")
	src := fs.String("source-endpoint", "", "host:port of the source Milvus")
	tgt := fs.String("target-endpoint", "", "host:port of the target Milvus")
	colls := fs.String("collections", "", "comma-separated database.collection to compare; empty for all")
	if _, err := c.parse(fs, args, 0, "flags only: zdm verify --source-endpoint A --target-endpoint B"); err != nil {
		return err
	}
	return c.call(ctx, func(ctx context.Context) error {
		resp, err := lagpb.NewLagMonitorServiceClient(c.conn).Verify(ctx, &lagpb.VerifyRequest{Collections: list(*colls),
			Source: &zdmpb.ClusterConnection{Endpoint: *src}, Target: &zdmpb.ClusterConnection{Endpoint: *tgt}})
		if err != nil {
			return err
		}
		if c.output == "json" {
			if err := c.json(resp); err != nil {
				return err
			}
		} else {
			w := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "COLLECTION\tSOURCE ROWS\tTARGET ROWS\tMISMATCHED RANGES")
			for _, v := range resp.GetCollections() {
				fmt.Fprintf(w, "%s.%s\t%d\t%d\t%d\n", v.GetDatabase(), v.GetCollection(), v.GetSourceCount(), v.GetTargetCount(), len(v.GetMismatches()))
			}
			if err := w.Flush(); err != nil {
				return err
			}
		}
		if !resp.GetMatch() {
			return errDiffer
		}
		return nil
	})
}

// errDiffer is a verification that found differences.
var errDiffer = errors.New("source and target differ")

// call dials and runs f with a context carrying the API key.
func (c *client) call(ctx context.Context, f func(ctx context.Context) error) error {
	if err := c.dial(); err != nil {
		return err
	}
	defer c.conn.Close()
	cctx, cancel := c.ctx(ctx, false)
	defer cancel()
	return f(cctx)
}

func list(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func trim(s, prefix string) string { return strings.TrimPrefix(s, prefix) }

// state is m's state as users see it.
func state(m *zdmpb.Migration) string { return trim(m.GetState().String(), "MIGRATION_STATE_") }

// printMigration prints the migration as a short report.
func printMigration(out io.Writer, m *zdmpb.Migration) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "migration\t%s (%s)\n", m.GetMigrationId(), trim(m.GetType().String(), "MIGRATION_TYPE_"))
	fmt.Fprintf(w, "state\t%s\n", state(m))
	fmt.Fprintf(w, "clusters\t%s -> %s\n", m.GetSourceClusterId(), m.GetTargetClusterId())
	var stages []string
	for _, s := range m.GetStages() {
		stages = append(stages, strings.ToLower(trim(s.GetKind().String(), "STAGE_KIND_"))+" "+strings.ToLower(trim(s.GetState().String(), "STAGE_STATE_")))
	}
	fmt.Fprintf(w, "stages\t%s\n", strings.Join(stages, ", "))
	for _, p := range m.GetCollections() {
		fmt.Fprintf(w, "  %s.%s\t%s\n", p.GetDatabase(), p.GetCollection(), progressLine(p))
	}
	if l := m.GetLag(); l.GetLag() != nil {
		fmt.Fprintf(w, "lag\t%s\n", l.GetLag().AsDuration().Round(time.Millisecond))
	}
	if d := m.GetSwitchoverWritePause(); d != nil {
		fmt.Fprintf(w, "write pause\t%s\n", d.AsDuration().Round(time.Millisecond))
	}
	for _, p := range m.GetClusterProblems() {
		fmt.Fprintf(w, "not answering\t%s\n", problemLine(p))
	}
	if e := m.GetError(); e != nil {
		fmt.Fprintf(w, "error\t%s: %s\n", e.GetCode(), e.GetMessage())
	}
	if ep := m.GetTargetEndpoint(); ep != "" {
		fmt.Fprintf(w, "clients connect to\t%s\n", ep)
	}
	if h := m.GetHistory(); len(h) > 0 {
		last := h[len(h)-1]
		fmt.Fprintf(w, "last\t%s %s\n", last.GetTime().AsTime().Local().Format(time.TimeOnly), last.GetReason())
	}
	if id := m.GetTraceId(); id != "" {
		fmt.Fprintf(w, "trace\t%s (in Jaeger: /trace/%s)\n", id, id)
	}
	return w.Flush()
}

// progressLine is one collection's phase and progress.
func progressLine(p *zdmpb.CollectionProgress) string {
	s := strings.ToLower(trim(p.GetPhase().String(), "COLLECTION_PHASE_"))
	if t := p.GetRowsTotal(); t > 0 {
		s += fmt.Sprintf("  %d/%d rows (%.0f%%)", p.GetRowsCopied(), t, 100*float64(p.GetRowsCopied())/float64(t))
	}
	if r := p.GetRowsPerSecond(); r > 0 {
		s += fmt.Sprintf("  %.0f rows/s", r)
	}
	if e := p.GetEta(); e != nil && e.AsDuration() > 0 {
		s += "  ETA " + e.AsDuration().Round(time.Second).String()
	}
	if l := p.GetLag(); l != nil {
		s += "  lag " + l.AsDuration().Round(time.Millisecond).String()
	}
	return s
}

// problemLine is a cluster of the migration that does not answer: which
// one, since when, how often zdm tried, when the migration fails if it
// stays down, and its last error.
func problemLine(p *zdmpb.ClusterProblem) string {
	return fmt.Sprintf("%s %q since %s, %d failed attempts, fails at %s if still down; last error: %s",
		strings.ToLower(trim(p.GetRole().String(), "CLUSTER_ROLE_")), p.GetClusterId(),
		p.GetSince().AsTime().Local().Format(time.TimeOnly), p.GetFailedAttempts(),
		p.GetFailTime().AsTime().Local().Format(time.TimeOnly), p.GetLastError())
}

// allPages calls page with each page token in turn, from the first page,
// and returns every item of every page.
func allPages[T any](page func(token string) (items []T, next string, err error)) ([]T, error) {
	var all []T
	for token := ""; ; {
		items, next, err := page(token)
		if err != nil {
			return nil, err
		}
		all = append(all, items...)
		if token = next; token == "" {
			return all, nil
		}
	}
}
