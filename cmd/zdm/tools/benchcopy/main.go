// Command benchcopy measures zdm's snapshot copy on the test rig's
// primary tier (make bench-copy) against the target's ingest ceiling, a
// naive copy and the limit of the machine that source, target and copier
// share. It prints one name=value line per figure (figures.go).
//
// In one run (each measurement repeated, -repeat, and the median
// reported) it (a) inserts pre-generated rows straight into the target
// with the copier's batch size and concurrency: the ceiling, and the CPU
// the target spends per row inserted; (r) reads the source collection
// with the copier's read path and drops the rows: the CPU the source
// spends per row served; (b) runs an OFFLINE migration with bin/zdm, the
// copier in a process of its own, and times the copy stage, with the CPU
// of target, source and copier per row; (c) copies with the
// single-threaded SDK query iterator and insert loop a user would write
// by hand. CPU is read from /proc for each server's process group.
//
// The shared limit is cores x 10^6 / (source + target CPU us per row):
// the rows per second the machine could copy if the servers did nothing
// but serve the copy.
//
// With -scale 100000,400000,1600000 it copies collections of those sizes
// (-dim 128 in make bench-copy-scale) and prints the rate and the
// copier's peak memory at each size, and how much the rate drops from the
// smallest to the largest.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/milvus-io/milvus-sdk-go/v2/client"
	"github.com/milvus-io/milvus-sdk-go/v2/entity"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"google.golang.org/protobuf/proto"

	"github.com/zdm-io/zdm/cmd/zdm/internal/benchproc"
	"github.com/zdm-io/zdm/pkg/milvusx"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
	copier "github.com/zdm-io/zdm/services/snapshot-copier"
)

const (
	database   = "bench"
	collection = "docs"
)

// dim is the vectors' dimension (-dim).
var dim = 768

func main() {
	ctx := context.Background()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "benchcopy:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	rows := flag.Int("rows", 200_000, "rows in the benchmark collection")
	naiveRows := flag.Int("naive-rows", 50_000, "rows the naive copy is timed on (its rate is what counts)")
	batchMiB := flag.Int("batch-mib", copier.DefaultBatchBytes>>20, "the copier's batch size; the ceiling inserts as many rows at a time")
	workers := flag.Int("workers", 2, "copier workers, and ceiling insert concurrency")
	zdmBin := flag.String("zdm", "bin/zdm", "zdm binary")
	repeat := flag.Int("repeat", 3, "runs of each measurement; each figure is their median (peak RSS: their maximum)")
	flag.IntVar(&dim, "dim", 768, "dimension of the vectors")
	scale := flag.String("scale", "", "comma-separated collection sizes: measure how the copy scales instead")
	srcPidfile := flag.String("source-pidfile", ".testenv/pids/milvus-source.pid", "pid file of the source Milvus (its process group is counted)")
	tgtPidfile := flag.String("target-pidfile", ".testenv/pids/milvus-target.pid", "pid file of the target Milvus")
	flag.Parse()
	src, tgt := os.Getenv("ZDM_TEST_MILVUS_SOURCE"), os.Getenv("ZDM_TEST_MILVUS_TARGET")
	if src == "" || tgt == "" {
		return errors.New("ZDM_TEST_MILVUS_SOURCE/TARGET unset: run make testenv-up and source .testenv/env")
	}
	for _, addr := range []string{src, tgt} {
		if err := requireEmpty(ctx, addr); err != nil {
			return err
		}
	}
	srcPgid, err := readPid(*srcPidfile)
	if err != nil {
		return err
	}
	tgtPgid, err := readPid(*tgtPidfile)
	if err != nil {
		return err
	}
	r := rig{src: src, tgt: tgt, srcPgid: srcPgid, tgtPgid: tgtPgid, bin: *zdmBin, workers: *workers, batchMiB: *batchMiB}
	// Rows per batch as the copier cuts them: its batches are sized by
	// the bytes of the rows' fields.
	r.batchRows = (*batchMiB << 20) / rowBytes()
	defer func() { _ = dropDatabase(ctx, src) }() // best effort on the way out
	defer func() { _ = dropDatabase(ctx, tgt) }() // best effort on the way out
	if *scale != "" {
		return r.scale(ctx, *scale)
	}

	// Each figure is the median of several runs: on a small shared
	// machine one run of anything varies by a third.
	var ceilings, ceilingCPU, reads, naives []float64
	var runs []copyRun
	// (a) The ceiling: straight inserts into the target.
	for range *repeat {
		l, err := r.load(ctx, tgt, *rows)
		if err != nil {
			return fmt.Errorf("ceiling: %w", err)
		}
		if err := dropDatabase(ctx, tgt); err != nil {
			return err
		}
		ceilings, ceilingCPU = append(ceilings, l.rate), append(ceilingCPU, l.cpuPerRow)
	}
	// The source data, loaded so it can be queried.
	if _, err := r.load(ctx, src, *rows); err != nil {
		return fmt.Errorf("source: %w", err)
	}
	for range *repeat {
		// (r) What serving the copy's reads costs the source.
		us, err := r.readPass(ctx)
		if err != nil {
			return fmt.Errorf("read pass: %w", err)
		}
		// (c) The naive copy, into an empty target.
		naive, err := naiveCopy(ctx, src, tgt, *naiveRows)
		if err != nil {
			return fmt.Errorf("naive copy: %w", err)
		}
		if err := dropDatabase(ctx, tgt); err != nil {
			return err
		}
		// (b) zdm's copy.
		c, err := r.zdmCopy(ctx)
		if err != nil {
			return fmt.Errorf("zdm copy: %w", err)
		}
		if err := dropDatabase(ctx, tgt); err != nil {
			return err
		}
		reads, naives, runs = append(reads, us), append(naives, naive), append(runs, c)
	}
	copies, tgtCPU, srcCPU, copierCPU, rss := []float64{}, []float64{}, []float64{}, []float64{}, 0.0
	for _, c := range runs {
		copies, tgtCPU, srcCPU, copierCPU = append(copies, c.rate), append(tgtCPU, c.targetCPU), append(srcCPU, c.sourceCPU), append(copierCPU, c.copierCPU)
		rss = max(rss, c.peakRSS)
	}
	fmt.Fprintf(os.Stderr, "benchcopy: runs: ceiling %.0f rows/s %.0f us/row; read %.0f us/row; copy %.0f rows/s, target %.0f us/row, source %.0f us/row; naive %.0f rows/s\n",
		ceilings, ceilingCPU, reads, copies, tgtCPU, srcCPU, naives)
	cores := float64(runtime.NumCPU())
	v := map[string]float64{"rows": float64(*rows), "runs": float64(*repeat), "cores": cores,
		"ceiling_rows_per_s": median(ceilings), "copy_rows_per_s": median(copies), "naive_rows_per_s": median(naives),
		"copier_peak_rss_mib": rss, "target_write_cpu_us_per_row": median(ceilingCPU), "source_read_cpu_us_per_row": median(reads),
		"copy_target_cpu_us_per_row": median(tgtCPU), "copy_source_cpu_us_per_row": median(srcCPU), "copier_cpu_us_per_row": median(copierCPU)}
	v["ratio_to_ceiling"] = v["copy_rows_per_s"] / v["ceiling_rows_per_s"]
	v["speedup_vs_naive"] = v["copy_rows_per_s"] / v["naive_rows_per_s"]
	v["shared_limit_rows_per_s"] = cores * 1e6 / (v["source_read_cpu_us_per_row"] + v["target_write_cpu_us_per_row"])
	v["ratio_to_shared_limit"] = v["copy_rows_per_s"] / v["shared_limit_rows_per_s"]
	v["target_cpu_per_row_vs_ceiling"] = v["copy_target_cpu_us_per_row"] / v["target_write_cpu_us_per_row"]
	return report(os.Stdout, copyFigures, v)
}

// scale copies collections of each size in sizes (comma-separated) and
// reports the rate and the copier's peak memory at each.
func (r rig) scale(ctx context.Context, sizes string) error {
	var ns []int
	for f := range strings.SplitSeq(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return fmt.Errorf("-scale %q: want sizes such as 100000,400000", sizes)
		}
		ns = append(ns, n)
	}
	v := map[string]float64{}
	for _, n := range ns {
		if _, err := r.load(ctx, r.src, n); err != nil {
			return fmt.Errorf("source of %d rows: %w", n, err)
		}
		read, err := r.readPass(ctx)
		if err != nil {
			return fmt.Errorf("read pass of %d rows: %w", n, err)
		}
		c, err := r.zdmCopy(ctx)
		if err != nil {
			return fmt.Errorf("copy of %d rows: %w", n, err)
		}
		fmt.Fprintf(os.Stderr, "benchcopy: %d rows: %.0f rows/s, copier peak %.0f MiB; source CPU per row: %.1f us in the read pass, %.1f in the copy; target %.1f\n",
			n, c.rate, c.peakRSS, read, c.sourceCPU, c.targetCPU)
		v["rows_per_s_"+strconv.Itoa(n)], v["copier_peak_rss_mib_"+strconv.Itoa(n)] = c.rate, c.peakRSS
		for _, addr := range []string{r.src, r.tgt} {
			if err := dropDatabase(ctx, addr); err != nil {
				return err
			}
		}
	}
	v["rate_drop_largest_vs_smallest"] = 1 - v["rows_per_s_"+strconv.Itoa(ns[len(ns)-1])]/v["rows_per_s_"+strconv.Itoa(ns[0])]
	return report(os.Stdout, scaleFigures(ns), v)
}

// rig is the two servers, their process groups, and how zdm copies.
type rig struct {
	src, tgt         string
	srcPgid, tgtPgid int
	bin              string
	workers          int
	batchMiB         int
	batchRows        int
}

func readPid(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("%w (is the rig up? make testenv-up)", err)
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

func groupCPU(pgid int) float64 { return benchproc.CPUSeconds(benchproc.GroupPids(pgid)) }

func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	return s[len(s)/2]
}

func connect(ctx context.Context, addr, db string) (client.Client, error) {
	return milvusx.Connect(ctx, &zdmpb.ClusterConnection{Endpoint: addr}, db)
}

func requireEmpty(ctx context.Context, addr string) error {
	c, err := connect(ctx, addr, "")
	if err != nil {
		return err
	}
	defer c.Close()
	colls, err := milvusx.UserCollections(ctx, c)
	if err != nil {
		return err
	}
	if len(colls) > 0 {
		return fmt.Errorf("%s holds %v; the benchmark needs empty servers (make testenv-down; rm -rf .testenv/data; make testenv-up)", addr, colls)
	}
	return nil
}

func schema() *entity.Schema {
	return entity.NewSchema().WithName(collection).
		WithField(entity.NewField().WithName("id").WithDataType(entity.FieldTypeInt64).WithIsPrimaryKey(true)).
		WithField(entity.NewField().WithName("title").WithDataType(entity.FieldTypeVarChar).WithMaxLength(128)).
		WithField(entity.NewField().WithName("year").WithDataType(entity.FieldTypeInt32)).
		WithField(entity.NewField().WithName("score").WithDataType(entity.FieldTypeFloat)).
		WithField(entity.NewField().WithName("vec").WithDataType(entity.FieldTypeFloatVector).WithDim(int64(dim)))
}

// rowBytes is the size of one row's fields as the copier measures a page.
func rowBytes() int {
	size := 0
	for _, f := range batch(100_000, 100) {
		size += proto.Size(f.FieldData())
	}
	return size / 100
}

// batch builds rows [from, from+n) deterministically.
func batch(from, n int) []entity.Column {
	ids, titles, years, scores := make([]int64, n), make([]string, n), make([]int32, n), make([]float32, n)
	vecs := make([][]float32, n)
	r := rand.New(rand.NewPCG(uint64(from), 7))
	for i := range n {
		id := from + i
		ids[i], titles[i], years[i], scores[i] = int64(id), "document "+strconv.Itoa(id), int32(1990+id%35), r.Float32()
		v := make([]float32, dim)
		for j := range v {
			v[j] = r.Float32()
		}
		vecs[i] = v
	}
	return []entity.Column{entity.NewColumnInt64("id", ids), entity.NewColumnVarChar("title", titles),
		entity.NewColumnInt32("year", years), entity.NewColumnFloat("score", scores), entity.NewColumnFloatVector("vec", dim, vecs)}
}

// createCollection creates the benchmark database and collection on addr
// and returns a client bound to the database.
func createCollection(ctx context.Context, addr string) (client.Client, error) {
	admin, err := connect(ctx, addr, "")
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	if err := admin.CreateDatabase(ctx, database); err != nil {
		return nil, err
	}
	c, err := connect(ctx, addr, database)
	if err != nil {
		return nil, err
	}
	if err := c.CreateCollection(ctx, schema(), 2); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// loaded is what inserting a collection took.
type loaded struct {
	rate      float64 // rows/s of the inserts alone
	cpuPerRow float64 // CPU us the server spent per row, until the collection was at rest
}

// settle waits until the server of process group pgid has been idle
// (under a twentieth of a core) for ten seconds in a row, or for at most
// two minutes, so that the work a write causes after it is acknowledged
// is counted with it.
func settle(pgid int) {
	prev, quiet := groupCPU(pgid), 0
	for range 120 {
		time.Sleep(time.Second)
		cur := groupCPU(pgid)
		if cur-prev < 0.05 {
			quiet++
		} else {
			quiet = 0
		}
		if quiet == 10 {
			return
		}
		prev = cur
	}
}

// rest brings the benchmark collection on addr to rest after its writes:
// flushed, compacted, every segment indexed, and the server idle. A
// server keeps compacting and indexing what it was sent for a while after
// the last write; counted with the writes, that is part of what ingest
// costs, and left running, it would be counted with whatever comes next
// (on the source: with the copy's reads, which it also slows).
func rest(ctx context.Context, addr string, pgid int) error {
	c, err := connect(ctx, addr, database)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Flush(ctx, collection, false); err != nil {
		return err
	}
	id, err := c.ManualCompaction(ctx, collection, 0)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		state, err := c.GetCompactionState(ctx, id)
		if err != nil {
			return err
		}
		total, indexed, err := c.GetIndexBuildProgress(ctx, collection, "vec")
		if err != nil {
			return err
		}
		if state == entity.CompactionStateCompleted && indexed >= total {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: compaction or indexing not done after 10 minutes (%d of %d rows indexed)", addr, indexed, total)
		}
		time.Sleep(time.Second)
	}
	settle(pgid)
	return nil
}

// load creates the collection on addr with its index, as zdm's copy
// creates the target's, and inserts pre-generated rows with r.workers
// concurrent inserters in r.batchRows batches. It times the inserts and
// counts the server's CPU over them and until the collection is at rest
// (see rest). The source's collection is then loaded for querying.
func (r rig) load(ctx context.Context, addr string, rows int) (loaded, error) {
	c, err := createCollection(ctx, addr)
	if err != nil {
		return loaded{}, err
	}
	defer c.Close()
	idx, err := entity.NewIndexFlat(entity.L2)
	if err != nil {
		return loaded{}, err
	}
	if err := c.CreateIndex(ctx, collection, "vec", idx, false); err != nil {
		return loaded{}, err
	}
	var batches [][]entity.Column
	for from := 1; from <= rows; from += r.batchRows {
		batches = append(batches, batch(from, min(r.batchRows, rows-from+1)))
	}
	pgid := r.tgtPgid
	if addr == r.src {
		pgid = r.srcPgid
	}
	work := make(chan []entity.Column)
	errc := make(chan error, r.workers)
	var wg sync.WaitGroup
	cpu0, start := groupCPU(pgid), time.Now()
	for range r.workers {
		wg.Go(func() {
			for b := range work {
				if _, err := c.Insert(ctx, collection, "", b...); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	for _, b := range batches {
		work <- b
	}
	close(work)
	wg.Wait()
	l := loaded{rate: float64(rows) / time.Since(start).Seconds()}
	select {
	case err := <-errc:
		return loaded{}, err
	default:
	}
	// A write's work goes on after it is acknowledged: count it too.
	if err := rest(ctx, addr, pgid); err != nil {
		return loaded{}, err
	}
	l.cpuPerRow = (groupCPU(pgid) - cpu0) * 1e6 / float64(rows)
	if addr != r.src {
		return l, nil
	}
	if err := c.LoadCollection(ctx, collection, false); err != nil {
		return loaded{}, err
	}
	settle(pgid)
	return l, nil
}

// readPass reads the source collection with the copier's read path (pages
// of the copier's batch size, by primary key, at one read timestamp) and
// drops the rows; it returns the CPU us the source spent per row.
func (r rig) readPass(ctx context.Context) (float64, error) {
	c, err := milvusx.Open(ctx, &zdmpb.ClusterConnection{Endpoint: r.src}, database)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	t, err := milvusx.DescribeTable(ctx, c.Raw, database, collection)
	if err != nil {
		return 0, err
	}
	if t.ReadTs, err = milvusx.ReadTimestamp(ctx, c.Raw); err != nil {
		return 0, err
	}
	cpu0 := groupCPU(r.srcPgid)
	n, err := copier.ReadRange(ctx, c.Raw, t, milvusx.Range{}, r.batchMiB<<20)
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, errors.New("the read pass read no rows")
	}
	return (groupCPU(r.srcPgid) - cpu0) * 1e6 / float64(n), nil
}

func dropDatabase(ctx context.Context, addr string) error {
	c, err := connect(ctx, addr, database)
	if err != nil {
		return err
	}
	defer c.Close()
	names, err := milvusx.CollectionsIn(ctx, c, database)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := c.DropCollection(ctx, n); err != nil {
			return err
		}
	}
	return c.DropDatabase(ctx, database)
}

// naiveCopy is what a user writes by hand: the SDK's query iterator and an
// insert per batch, one at a time. It copies n rows.
func naiveCopy(ctx context.Context, src, tgt string, n int) (float64, error) {
	s, err := connect(ctx, src, database)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	t, err := createCollection(ctx, tgt)
	if err != nil {
		return 0, err
	}
	defer t.Close()
	start := time.Now()
	it, err := s.QueryIterator(ctx, client.NewQueryIteratorOption(collection).WithBatchSize(1000).
		WithOutputFields("id", "title", "year", "score", "vec"))
	if err != nil {
		return 0, err
	}
	copied := 0
	for copied < n {
		rs, err := it.Next(ctx)
		if err != nil {
			return 0, err
		}
		if rs.Len() == 0 {
			break
		}
		if _, err := t.Insert(ctx, collection, "", rs...); err != nil {
			return 0, err
		}
		copied += rs.Len()
	}
	rate := float64(copied) / time.Since(start).Seconds()
	return rate, t.Flush(ctx, collection, false)
}

// copyRun is one zdm copy: its rate, and what it cost per row copied.
type copyRun struct {
	rate                            float64 // rows/s of the copy stage
	targetCPU, sourceCPU, copierCPU float64 // CPU us per row copied
	peakRSS                         float64 // the copier's peak resident MiB
}

// zdmCopy runs an OFFLINE migration with zdm processes of its own (the
// coordinator, the lag monitor, the copier) and measures the copy stage.
// The lag monitor is killed once the copy runs, so the verification that
// would follow (it reads both sides) does not start: the migration stays
// VERIFYING. CPU is counted from the migration's creation: the source's
// and the copier's to the end of the copy, the target's until the
// collection is at rest (see rest), as the ceiling's is.
func (r rig) zdmCopy(ctx context.Context) (copyRun, error) {
	// Whatever an earlier step left the servers doing (dropping the last
	// run's collections, a load) is not this copy's.
	settle(r.srcPgid)
	settle(r.tgtPgid)
	dir, err := os.MkdirTemp("", "zdm-bench")
	if err != nil {
		return copyRun{}, err
	}
	defer os.RemoveAll(dir)
	addrs, err := benchproc.FreeAddrs(5)
	if err != nil {
		return copyRun{}, err
	}
	grpcAddr, natsAddr := addrs[0], addrs[1]
	coord := exec.CommandContext(ctx, r.bin, "-target", "coordinator", "-grpc-addr", grpcAddr, "-metrics-addr", addrs[2],
		"-nats-listen", natsAddr, "-data-dir", filepath.Join(dir, "data"), "-log-level", "warn")
	coord.Stderr = os.Stderr
	if err := coord.Start(); err != nil {
		return copyRun{}, err
	}
	defer benchproc.Stop(coord)
	if err := benchproc.WaitListening(grpcAddr); err != nil {
		return copyRun{}, err
	}
	cp := exec.CommandContext(ctx, r.bin, "-target", "snapshot-copier", "-nats-url", "nats://"+natsAddr, "-grpc-addr", addrs[3],
		"-metrics-addr", addrs[4], "-copier-workers", strconv.Itoa(r.workers), "-copier-batch-mib", strconv.Itoa(r.batchMiB), "-log-level", "warn")
	cp.Stderr = os.Stderr
	if err := cp.Start(); err != nil {
		return copyRun{}, err
	}
	defer benchproc.Stop(cp)
	more, err := benchproc.FreeAddrs(2)
	if err != nil {
		return copyRun{}, err
	}
	monitor := exec.CommandContext(ctx, r.bin, "-target", "lag-monitor", "-nats-url", "nats://"+natsAddr, "-grpc-addr", more[0],
		"-metrics-addr", more[1], "-log-level", "error")
	monitor.Stderr = os.Stderr
	if err := monitor.Start(); err != nil {
		return copyRun{}, err
	}
	defer benchproc.Stop(monitor)

	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return copyRun{}, err
	}
	defer conn.Close()
	clusters, mig := zdmpb.NewClusterServiceClient(conn), zdmpb.NewMigrationServiceClient(conn)
	for id, addr := range map[string]string{"src": r.src, "tgt": r.tgt} {
		if _, err := clusters.RegisterCluster(ctx, &zdmpb.RegisterClusterRequest{ClusterId: id, Connection: &zdmpb.ClusterConnection{Endpoint: addr}}); err != nil {
			return copyRun{}, err
		}
	}
	cpu := func() [3]float64 {
		return [3]float64{groupCPU(r.tgtPgid), groupCPU(r.srcPgid), benchproc.CPUSeconds([]int{cp.Process.Pid})}
	}
	cpu0 := cpu()
	// The copier announces its stages once it runs; until then the
	// migration is refused as not served.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		_, err := mig.CreateMigration(ctx, &zdmpb.CreateMigrationRequest{MigrationId: "bench", Type: zdmpb.MigrationType_MIGRATION_TYPE_OFFLINE,
			SourceClusterId: "src", TargetClusterId: "tgt", Options: &zdmpb.MigrationOptions{WorkUnitRows: 20_000}})
		if err == nil {
			break
		}
		if status.Code(err) != codes.FailedPrecondition || time.Now().After(deadline) {
			return copyRun{}, err
		}
	}
	var run copyRun
	var lastCPU [3]float64
	var lastRows int64
	monitorKilled := false
	for {
		run.peakRSS = max(run.peakRSS, benchproc.PeakRSS(cp.Process.Pid))
		now := cpu()
		resp, err := mig.GetMigration(ctx, &zdmpb.GetMigrationRequest{MigrationId: "bench"})
		if err != nil {
			return copyRun{}, err
		}
		m := resp.GetMigration()
		var rows int64
		for _, c := range m.GetCollections() {
			rows += c.GetRowsCopied()
		}
		switch m.GetState() {
		case zdmpb.MigrationState_MIGRATION_STATE_COPYING:
			if !monitorKilled {
				_ = monitor.Process.Kill() // Stop waits for it
				monitorKilled = true
			}
			lastCPU, lastRows = now, rows
		case zdmpb.MigrationState_MIGRATION_STATE_VERIFYING, zdmpb.MigrationState_MIGRATION_STATE_COMPLETED:
			if lastRows == 0 {
				return copyRun{}, errors.New("the copy was never seen running")
			}
			for _, s := range m.GetStages() {
				if s.GetKind() == zdmpb.StageKind_STAGE_KIND_COPY_DATA {
					d := s.GetEndTime().AsTime().Sub(s.GetStartTime().AsTime())
					run.rate = float64(rows) / d.Seconds()
					per := func(cpu, rows float64) float64 { return cpu * 1e6 / rows }
					run.sourceCPU, run.copierCPU = per(lastCPU[1]-cpu0[1], float64(lastRows)), per(lastCPU[2]-cpu0[2], float64(lastRows))
					if err := rest(ctx, r.tgt, r.tgtPgid); err != nil {
						return copyRun{}, err
					}
					run.targetCPU = per(groupCPU(r.tgtPgid)-cpu0[0], float64(rows))
					return run, nil
				}
			}
			return copyRun{}, errors.New("no copy stage")
		case zdmpb.MigrationState_MIGRATION_STATE_FAILED:
			return copyRun{}, fmt.Errorf("migration failed: %s", m.GetError().GetMessage())
		}
		time.Sleep(200 * time.Millisecond)
	}
}
