// Command benchcdc measures what the gateway costs the applications that
// write through it, and how far behind the target stays, on the test
// rig's primary tier (make bench-cdc). It prints one name=value line per
// figure.
//
// zdm runs as a process of its own with its gateway in front of the
// source, and a ZERO_DOWNTIME migration from the rig's source to its
// (empty) target is syncing, so capture is armed: every write through
// the gateway is recorded on the change stream before it is answered.
// (a) Latency: one writer inserts 10 rows of 768-dim vectors at a steady
// 200 requests/s, straight to the source, then through the gateway; the
// p99 of each and their difference. (b) Saturation: 8 writers insert as
// fast as they can, straight, through the gateway, and straight again
// (the source slows down as it fills, so the baseline is the mean of the
// two straight runs); rows/s of each, their ratio, and the CPU the zdm process (embedded NATS included)
// spends per CPU second of the source Milvus in the gateway run, read
// from /proc. The applier runs in a second zdm process, stopped during
// (a) and (b) so that the target's work does not take the source's CPU.
// (c) Lag: with the applier caught up, 1,000 rows/s of 768-dim vectors
// are written through the gateway for 60 s, and the migration's lag is
// sampled every second.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/milvus-io/milvus-sdk-go/v2/client"
	"github.com/milvus-io/milvus-sdk-go/v2/entity"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/zdm-io/zdm/cmd/zdm/internal/benchproc"
	lagpb "github.com/zdm-io/zdm/proto/zdm/lag/v1"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

const (
	dim        = 768
	database   = "benchcdc"
	collection = "docs"
	batchRows  = 10
)

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "benchcdc:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	zdmBin := flag.String("zdm", "bin/zdm", "zdm binary")
	rate := flag.Int("rate", 200, "requests per second of the latency runs")
	latencyFor := flag.Duration("latency-for", 20*time.Second, "length of each latency run")
	writers := flag.Int("writers", 8, "concurrent writers of the saturation runs")
	saturateFor := flag.Duration("saturate-for", 20*time.Second, "length of each saturation run")
	lagRate := flag.Int("lag-rows", 1000, "rows per second written through the gateway while lag is sampled")
	lagFor := flag.Duration("lag-for", 60*time.Second, "length of the lag run")
	switchWriters := flag.Int("switch-writers", 8, "writers through the gateway during the switchover")
	switchRate := flag.Int("switch-rate", 200, "inserts per second each switchover writer aims at")
	pidFile := flag.String("source-pidfile", ".testenv/pids/milvus-source.pid", "pid file of the source Milvus (its process group is counted)")
	flag.Parse()
	src := os.Getenv("ZDM_TEST_MILVUS_SOURCE")
	if src == "" {
		return errors.New("ZDM_TEST_MILVUS_SOURCE unset: run make testenv-up and source .testenv/env")
	}
	sourcePgid, err := readPid(*pidFile)
	if err != nil {
		return err
	}
	if err := prepare(ctx, src); err != nil {
		return fmt.Errorf("prepare the source: %w", err)
	}
	defer func() { _ = dropDatabase(context.WithoutCancel(ctx), src) }() // best effort: the rig is emptied on down anyway

	tgt := os.Getenv("ZDM_TEST_MILVUS_TARGET")
	if tgt == "" {
		return errors.New("ZDM_TEST_MILVUS_TARGET unset: run make testenv-up and source .testenv/env")
	}
	// A switched-over migration completes and leaves its data on the
	// target; the next run needs it empty.
	defer func() { _ = dropDatabase(context.WithoutCancel(ctx), tgt) }()
	z, err := startZDM(ctx, *zdmBin, src, tgt)
	if err != nil {
		return err
	}
	defer z.stop()
	gw, zdm := z.gateway, z.cmd

	direct, err := connect(ctx, src)
	if err != nil {
		return fmt.Errorf("connect to the source: %w", err)
	}
	defer direct.Close()
	viaGateway, err := connect(ctx, gw)
	if err != nil {
		return fmt.Errorf("connect through the gateway: %w", err)
	}
	defer viaGateway.Close()

	// Warm both paths up, then measure.
	if _, err := steady(ctx, direct, 50, 2*time.Second); err != nil {
		return fmt.Errorf("warm-up, direct: %w", err)
	}
	if _, err := steady(ctx, viaGateway, 50, 2*time.Second); err != nil {
		return fmt.Errorf("warm-up, gateway: %w", err)
	}
	directP99, err := steady(ctx, direct, *rate, *latencyFor)
	if err != nil {
		return fmt.Errorf("direct latency: %w", err)
	}
	gatewayP99, err := steady(ctx, viaGateway, *rate, *latencyFor)
	if err != nil {
		return fmt.Errorf("gateway latency: %w", err)
	}
	self := []int{os.Getpid()}
	dSrc0, dSelf0, dStart := benchproc.CPUSeconds(benchproc.GroupPids(sourcePgid)), benchproc.CPUSeconds(self), time.Now()
	directRate, err := saturate(ctx, direct, *writers, *saturateFor)
	if err != nil {
		return fmt.Errorf("direct saturation: %w", err)
	}
	dWall := time.Since(dStart).Seconds()
	directSrcCores := (benchproc.CPUSeconds(benchproc.GroupPids(sourcePgid)) - dSrc0) / dWall
	directClientCores := (benchproc.CPUSeconds(self) - dSelf0) / dWall
	if dir := os.Getenv("BENCH_CDC_PROFILE"); dir != "" {
		go profile(z.metrics, filepath.Join(dir, "zdm-gateway.pprof"), *saturateFor-2*time.Second)
	}
	zdmCPU0, srcCPU0 := benchproc.CPUSeconds([]int{zdm.Process.Pid}), benchproc.CPUSeconds(benchproc.GroupPids(sourcePgid))
	gSelf0, gStart := benchproc.CPUSeconds(self), time.Now()
	gatewayRate, err := saturate(ctx, viaGateway, *writers, *saturateFor)
	if err != nil {
		return fmt.Errorf("gateway saturation: %w", err)
	}
	gWall := time.Since(gStart).Seconds()
	zdmCPU, srcCPU := benchproc.CPUSeconds([]int{zdm.Process.Pid})-zdmCPU0, benchproc.CPUSeconds(benchproc.GroupPids(sourcePgid))-srcCPU0
	gatewayClientCores := (benchproc.CPUSeconds(self) - gSelf0) / gWall
	// The source slows down as it fills (flushes, compaction): a direct
	// run after the gateway's too, and the baseline is their mean.
	directLast, err := saturate(ctx, direct, *writers, *saturateFor)
	if err != nil {
		return fmt.Errorf("direct saturation: %w", err)
	}
	directFirst := directRate
	directRate = (directFirst + directLast) / 2

	lags, err := z.lag(ctx, viaGateway, *lagRate, *lagFor)
	if err != nil {
		return fmt.Errorf("lag: %w", err)
	}

	sw, err := z.switchover(ctx, src, viaGateway, *switchWriters, *switchRate)
	if err != nil {
		return fmt.Errorf("switchover: %w", err)
	}

	fmt.Printf("direct_p99_ms=%.2f\n", directP99)
	fmt.Printf("gateway_p99_ms=%.2f\n", gatewayP99)
	fmt.Printf("gateway_added_p99_ms=%.2f\n", gatewayP99-directP99)
	fmt.Printf("direct_rows_per_s=%.0f\n", directRate)
	fmt.Printf("direct_rows_per_s_first=%.0f\n", directFirst)
	fmt.Printf("direct_rows_per_s_last=%.0f\n", directLast)
	fmt.Printf("gateway_rows_per_s=%.0f\n", gatewayRate)
	fmt.Printf("gateway_throughput_ratio=%.2f\n", gatewayRate/directRate)
	fmt.Printf("zdm_cpu_per_source_cpu=%.3f\n", zdmCPU/srcCPU)
	// Where the machine's cores went in each saturation run: the source,
	// the benchmark's own writers and, through the gateway, zdm.
	fmt.Printf("direct_source_cores=%.2f\n", directSrcCores)
	fmt.Printf("direct_client_cores=%.2f\n", directClientCores)
	fmt.Printf("gateway_source_cores=%.2f\n", srcCPU/gWall)
	fmt.Printf("gateway_zdm_cores=%.2f\n", zdmCPU/gWall)
	fmt.Printf("gateway_client_cores=%.2f\n", gatewayClientCores)
	fmt.Printf("lag_p50_s=%.2f\n", lags[len(lags)/2])
	fmt.Printf("lag_p99_s=%.2f\n", lags[len(lags)*99/100])
	fmt.Printf("lag_max_s=%.2f\n", lags[len(lags)-1])
	fmt.Printf("switchover_write_pause_ms=%.0f\n", sw.pause.Seconds()*1000)
	fmt.Printf("switchover_failed_writes=%d\n", sw.failed)
	fmt.Printf("switchover_attempts=%d\n", sw.attempts)
	fmt.Printf("switchover_writes_per_s=%.0f\n", sw.rate)
	return nil
}

// switched is how a switchover went.
type switched struct {
	pause    time.Duration
	failed   int64
	attempts int32
	rate     float64 // inserts per second of all writers together
}

// switchoverID is the migration the switchover is measured on.
const switchoverID = "benchsw"

// switchover measures a switchover on a migration every row of which was
// written through the gateway (the runs before wrote to the source
// directly too, which only the final verification of a stop sync would
// repair): it cancels the first migration, starts again from an empty
// source and a new migration, waits for it to be ready to finalise,
// starts writers inserting through the gateway at rate each, switches
// over (again after an abort, up to three times) and keeps writing for a
// while after, counting writes that failed.
func (z *zdmProcs) switchover(ctx context.Context, src string, c client.Client, writers, rate int) (out switched, err error) {
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	z.cancel(cctx, migrationID)
	cancel()
	if err = dropDatabase(ctx, src); err != nil {
		return switched{}, err
	}
	if err = prepare(ctx, src); err != nil {
		return switched{}, err
	}
	mig := zdmpb.NewMigrationServiceClient(z.conn)
	if _, err := mig.CreateMigration(ctx, &zdmpb.CreateMigrationRequest{MigrationId: switchoverID, Type: zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME,
		SourceClusterId: "src", TargetClusterId: "tgt"}); err != nil {
		return switched{}, fmt.Errorf("create the switchover's migration: %w", err)
	}
	z.migration = switchoverID
	get := func() (*zdmpb.Migration, error) {
		resp, err := mig.GetMigration(ctx, &zdmpb.GetMigrationRequest{MigrationId: switchoverID})
		return resp.GetMigration(), err
	}
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(200 * time.Millisecond) {
		m, err := get()
		if err != nil {
			return switched{}, err
		}
		if m.GetState() == zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE {
			break
		}
		if time.Now().After(deadline) || m.GetEndTime() != nil {
			return switched{}, fmt.Errorf("migration %s (%v), not ready to finalise", m.GetState(), m.GetError())
		}
	}
	var writes atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	for range writers {
		wg.Go(func() {
			tick := time.NewTicker(time.Second / time.Duration(rate))
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				if err := insert(ctx, c); err != nil {
					atomic.AddInt64(&out.failed, 1)
					continue
				}
				writes.Add(1)
			}
		})
	}
	defer func() { close(stop); wg.Wait(); out.rate = float64(writes.Load()) / time.Since(start).Seconds() }()
	time.Sleep(3 * time.Second)
	for out.attempts = 1; ; out.attempts++ {
		resp, err := mig.Switchover(ctx, &zdmpb.SwitchoverRequest{MigrationId: switchoverID})
		if err != nil {
			return out, err
		}
		attempt := resp.GetMigration().GetSwitchover().GetAttempt()
		var m *zdmpb.Migration
		for m = resp.GetMigration(); m.GetState() == zdmpb.MigrationState_MIGRATION_STATE_SWITCHING_OVER ||
			(m.GetState() == zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE && m.GetSwitchover().GetAttempt() == attempt && m.GetSwitchover().GetAbortReason() == ""); {
			time.Sleep(50 * time.Millisecond)
			if m, err = get(); err != nil {
				return out, err
			}
		}
		if m.GetSwitchover().GetSwitchTime() != nil {
			out.pause = m.GetSwitchoverWritePause().AsDuration()
			break
		}
		fmt.Fprintf(os.Stderr, "switchover attempt %d aborted: %s\n", attempt, m.GetSwitchover().GetAbortReason())
		if out.attempts == 3 {
			return out, errors.New("three switchovers aborted")
		}
		time.Sleep(3 * time.Second)
	}
	time.Sleep(2 * time.Second) // writes go on, to the target
	return out, nil
}

func connect(ctx context.Context, addr string) (client.Client, error) {
	return client.NewClient(ctx, client.Config{Address: addr, DBName: database})
}

// prepare makes the benchmark collection on the source, dropping what an
// interrupted run left behind first.
func prepare(ctx context.Context, addr string) error {
	admin, err := client.NewClient(ctx, client.Config{Address: addr})
	if err != nil {
		return err
	}
	defer admin.Close()
	dbs, err := admin.ListDatabases(ctx)
	if err != nil {
		return err
	}
	for _, db := range dbs {
		if db.Name == database {
			if err := dropDatabase(ctx, addr); err != nil {
				return fmt.Errorf("drop the database %s an earlier run left: %w", database, err)
			}
		}
	}
	if err := admin.CreateDatabase(ctx, database); err != nil {
		return fmt.Errorf("create database %s on the source: %w", database, err)
	}
	c, err := connect(ctx, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	schema := entity.NewSchema().WithName(collection).
		WithField(entity.NewField().WithName("id").WithDataType(entity.FieldTypeInt64).WithIsPrimaryKey(true)).
		WithField(entity.NewField().WithName("vec").WithDataType(entity.FieldTypeFloatVector).WithDim(dim))
	if err := c.CreateCollection(ctx, schema, 1); err != nil {
		return err
	}
	// Standalone Milvus reads (and so copies) only loaded collections.
	idx, err := entity.NewIndexFlat(entity.L2)
	if err != nil {
		return err
	}
	if err := c.CreateIndex(ctx, collection, "vec", idx, false); err != nil {
		return err
	}
	return c.LoadCollection(ctx, collection, false)
}

func dropDatabase(ctx context.Context, addr string) error {
	c, err := connect(ctx, addr)
	if err != nil {
		return err
	}
	if err := c.DropCollection(ctx, collection); err != nil {
		c.Close()
		return err
	}
	c.Close()
	admin, err := client.NewClient(ctx, client.Config{Address: addr})
	if err != nil {
		return err
	}
	defer admin.Close()
	return admin.DropDatabase(ctx, database)
}

var nextID atomic.Int64

// insert writes batchRows new rows.
func insert(ctx context.Context, c client.Client) error {
	ids := make([]int64, batchRows)
	vecs := make([][]float32, batchRows)
	for i := range batchRows {
		ids[i] = nextID.Add(1)
		v := make([]float32, dim)
		for j := range v {
			v[j] = rand.Float32()
		}
		vecs[i] = v
	}
	_, err := c.Insert(ctx, collection, "", entity.NewColumnInt64("id", ids), entity.NewColumnFloatVector("vec", dim, vecs))
	return err
}

// steady sends inserts at rate per second for d and returns the p99
// latency in milliseconds.
func steady(ctx context.Context, c client.Client, rate int, d time.Duration) (float64, error) {
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	end := time.Now().Add(d)
	var lat []float64
	for time.Now().Before(end) {
		<-tick.C
		start := time.Now()
		if err := insert(ctx, c); err != nil {
			return 0, err
		}
		lat = append(lat, float64(time.Since(start).Microseconds())/1000)
	}
	slices.Sort(lat)
	return lat[len(lat)*99/100], nil
}

// saturate runs writers inserting as fast as they can for d and returns
// rows per second.
func saturate(ctx context.Context, c client.Client, writers int, d time.Duration) (float64, error) {
	var rows atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	start := time.Now()
	end := start.Add(d)
	for range writers {
		wg.Go(func() {
			for time.Now().Before(end) {
				if err := insert(ctx, c); err != nil {
					errs <- err
					return
				}
				rows.Add(batchRows)
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return float64(rows.Load()) / time.Since(start).Seconds(), nil
}

// zdmProcs are the benchmark's zdm processes: one with the coordinator,
// copier, lag monitor and the gateway in front of the source (registered
// as "src"), and one applier, started and stopped by the benchmark.
type zdmProcs struct {
	bin, nats, gateway string
	metrics            string
	cmd, applier       *exec.Cmd
	conn               *grpc.ClientConn
	migration          string // the migration running
}

func (z *zdmProcs) stop() {
	if z.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		// Drops what the migration made on the target, and unlocks both.
		z.cancel(ctx, z.migration)
		cancel()
		z.conn.Close()
	}
	if z.applier != nil {
		benchproc.Stop(z.applier)
	}
	benchproc.Stop(z.cmd)
}

const migrationID = "benchcdc"

// cancel cancels migration id and waits until it is cancelled (or has
// ended otherwise) or ctx ends.
func (z *zdmProcs) cancel(ctx context.Context, id string) {
	mig := zdmpb.NewMigrationServiceClient(z.conn)
	_, _ = mig.CancelMigration(ctx, &zdmpb.CancelMigrationRequest{MigrationId: id})
	for ctx.Err() == nil {
		resp, err := mig.GetMigration(ctx, &zdmpb.GetMigrationRequest{MigrationId: id})
		if err != nil || resp.GetMigration().GetEndTime() != nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// startZDM starts zdm with its gateway in front of src, and a
// ZERO_DOWNTIME migration from src to tgt, and returns once it syncs.
func startZDM(ctx context.Context, bin, src, tgt string) (*zdmProcs, error) {
	addrs, err := benchproc.FreeAddrs(4)
	if err != nil {
		return nil, err
	}
	grpcAddr, gw := addrs[0], addrs[2]
	dir, err := os.MkdirTemp("", "benchcdc")
	if err != nil {
		return nil, err
	}
	z := &zdmProcs{bin: bin, gateway: gw, nats: "nats://" + addrs[3], metrics: addrs[1], migration: migrationID}
	z.cmd = exec.CommandContext(ctx, bin, "-target", "coordinator,snapshot-copier,lag-monitor,cdc-streamer", "-apply=false",
		"-grpc-addr", grpcAddr, "-metrics-addr", addrs[1], "-nats-listen", addrs[3], "-data-dir", filepath.Join(dir, "data"),
		"-gateway-cluster", "src", "-gateway-addr", gw, "-log-level", "warn")
	z.cmd.Stderr = os.Stderr
	if err := z.cmd.Start(); err != nil {
		return nil, err
	}
	if err := benchproc.WaitListening(gw); err != nil {
		benchproc.Stop(z.cmd)
		return nil, err
	}
	if z.conn, err = grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		benchproc.Stop(z.cmd)
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for id, addr := range map[string]string{"src": src, "tgt": tgt} {
		if _, err := zdmpb.NewClusterServiceClient(z.conn).RegisterCluster(rctx, &zdmpb.RegisterClusterRequest{ClusterId: id,
			Connection: &zdmpb.ClusterConnection{Endpoint: addr}}); err != nil {
			z.stop()
			return nil, fmt.Errorf("register %s: %w", id, err)
		}
	}
	// The applier serves the sync stage: start it to create the
	// migration, and stop it once the migration syncs.
	if err := z.startApplier(ctx); err != nil {
		z.stop()
		return nil, err
	}
	mig := zdmpb.NewMigrationServiceClient(z.conn)
	for {
		_, err = mig.CreateMigration(rctx, &zdmpb.CreateMigrationRequest{MigrationId: migrationID, Type: zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME,
			SourceClusterId: "src", TargetClusterId: "tgt", Options: &zdmpb.MigrationOptions{LagThreshold: durationpb.New(time.Hour)}})
		if err == nil || !strings.Contains(err.Error(), "no running zdm process") || rctx.Err() != nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		z.stop()
		return nil, fmt.Errorf("create the migration (the rig's target must be empty): %w", err)
	}
	for {
		resp, err := mig.GetMigration(rctx, &zdmpb.GetMigrationRequest{MigrationId: migrationID})
		if err != nil {
			z.stop()
			return nil, err
		}
		m := resp.GetMigration()
		if m.GetState() == zdmpb.MigrationState_MIGRATION_STATE_FAILED {
			z.stop()
			return nil, fmt.Errorf("migration failed: %v", m.GetError())
		}
		if m.GetState() == zdmpb.MigrationState_MIGRATION_STATE_SYNCING || m.GetState() == zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	benchproc.Stop(z.applier)
	z.applier = nil
	return z, nil
}

func (z *zdmProcs) startApplier(ctx context.Context) error {
	addrs, err := benchproc.FreeAddrs(2)
	if err != nil {
		return err
	}
	z.applier = exec.CommandContext(ctx, z.bin, "-target", "cdc-streamer", "-nats-url", z.nats, "-grpc-addr", addrs[0],
		"-metrics-addr", addrs[1], "-log-level", "warn")
	z.applier.Stderr = os.Stderr
	if err := z.applier.Start(); err != nil {
		z.applier = nil
		return err
	}
	return benchproc.WaitListening(addrs[0])
}

// lag starts the applier, waits until it has caught up with the changes
// of the runs before, then writes rowsPerS rows per second through the
// gateway for d, sampling the migration's lag every second, and returns
// the samples in seconds, sorted.
func (z *zdmProcs) lag(ctx context.Context, c client.Client, rowsPerS int, d time.Duration) ([]float64, error) {
	if err := z.startApplier(ctx); err != nil {
		return nil, err
	}
	lagc := lagpb.NewLagMonitorServiceClient(z.conn)
	get := func() (float64, error) {
		resp, err := lagc.GetLag(ctx, &lagpb.GetLagRequest{MigrationId: migrationID})
		if err != nil {
			return 0, err
		}
		return resp.GetLag().AsDuration().Seconds(), nil
	}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		l, err := get()
		if err == nil && l < 1 {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the applier did not catch up within 5m: lag %.1fs, %v", l, err)
		}
		time.Sleep(time.Second)
	}
	done := make(chan error, 1)
	go func() {
		_, err := steady(ctx, c, rowsPerS/batchRows, d)
		done <- err
	}()
	var lags []float64
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				return nil, err
			}
			slices.Sort(lags)
			return lags, nil
		case <-tick.C:
			l, err := get()
			if err != nil {
				return nil, err
			}
			lags = append(lags, l)
		}
	}
}

// profile saves a CPU profile of the zdm process taken over d, when
// BENCH_CDC_PROFILE names a directory.
func profile(metricsAddr, path string, d time.Duration) {
	resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", metricsAddr, int(d.Seconds())))
	if err != nil {
		fmt.Fprintln(os.Stderr, "profile:", err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "profile:", err)
		return
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil {
		fmt.Fprintln(os.Stderr, "profile:", err)
	}
}

func readPid(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("source pid file: %w (run make testenv-up)", err)
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}
