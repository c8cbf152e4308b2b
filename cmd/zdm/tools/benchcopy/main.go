// Command benchcopy measures zdm's snapshot copy against the target's
// ingest ceiling and a naive copy, on the test rig's primary tier (make
// bench-copy). It prints one name=value line per figure.
//
// In one run (each measurement repeated, -repeat, and the median
// reported) it (a) inserts pre-generated rows straight into the target
// with the copier's batch size and concurrency: the ceiling; (b) runs an
// OFFLINE migration with bin/zdm, the copier in a process of its own, and
// times the copy stage; (c) copies with the single-threaded SDK query
// iterator and insert loop a user would write by hand.
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
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/milvus-io/milvus-sdk-go/v2/client"
	"github.com/milvus-io/milvus-sdk-go/v2/entity"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"google.golang.org/protobuf/proto"

	"github.com/zdm-io/zdm/cmd/zdm/internal/benchproc"
	"github.com/zdm-io/zdm/pkg/milvusx"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
	copier "github.com/zdm-io/zdm/services/snapshot-copier"
)

const (
	dim        = 768
	database   = "bench"
	collection = "docs"
)

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
	flag.Parse()
	// Rows per batch as the copier cuts them: its batches are sized by
	// the bytes of the rows' fields.
	batchRows := ptr((*batchMiB << 20) / rowBytes())
	src, tgt := os.Getenv("ZDM_TEST_MILVUS_SOURCE"), os.Getenv("ZDM_TEST_MILVUS_TARGET")
	if src == "" || tgt == "" {
		return errors.New("ZDM_TEST_MILVUS_SOURCE/TARGET unset: run make testenv-up and source .testenv/env")
	}
	for _, addr := range []string{src, tgt} {
		if err := requireEmpty(ctx, addr); err != nil {
			return err
		}
	}

	// Each figure is the median of several runs: on a small shared
	// machine one run of anything varies by a third.
	var ceilings, naives, copies []float64
	var rss float64
	// (a) The ceiling: straight inserts into the target.
	for range *repeat {
		ceiling, err := timedLoad(ctx, tgt, *rows, *batchRows, *workers)
		if err != nil {
			return fmt.Errorf("ceiling: %w", err)
		}
		if err := dropDatabase(ctx, tgt); err != nil {
			return err
		}
		ceilings = append(ceilings, ceiling)
	}
	// The source data, loaded so it can be queried.
	if _, err := timedLoad(ctx, src, *rows, *batchRows, *workers); err != nil {
		return fmt.Errorf("source: %w", err)
	}
	defer func() { _ = dropDatabase(ctx, src) }() // best effort on the way out
	defer func() { _ = dropDatabase(ctx, tgt) }() // best effort on the way out
	for range *repeat {
		// (c) The naive copy, into an empty target.
		naive, err := naiveCopy(ctx, src, tgt, *naiveRows)
		if err != nil {
			return fmt.Errorf("naive copy: %w", err)
		}
		if err := dropDatabase(ctx, tgt); err != nil {
			return err
		}
		// (b) zdm's copy.
		copyRate, peak, err := zdmCopy(ctx, *zdmBin, src, tgt, *workers, *batchMiB)
		if err != nil {
			return fmt.Errorf("zdm copy: %w", err)
		}
		if err := dropDatabase(ctx, tgt); err != nil {
			return err
		}
		naives, copies, rss = append(naives, naive), append(copies, copyRate), max(rss, peak)
	}
	fmt.Fprintf(os.Stderr, "benchcopy: runs: ceiling %.0f, copy %.0f, naive %.0f rows/s\n", ceilings, copies, naives)
	ceiling, naive, copyRate := median(ceilings), median(naives), median(copies)

	fmt.Printf("rows=%d\n", *rows)
	fmt.Printf("runs=%d\n", *repeat)
	fmt.Printf("ceiling_rows_per_s=%.0f\n", ceiling)
	fmt.Printf("copy_rows_per_s=%.0f\n", copyRate)
	fmt.Printf("naive_rows_per_s=%.0f\n", naive)
	fmt.Printf("ratio_to_ceiling=%.2f\n", copyRate/ceiling)
	fmt.Printf("speedup_vs_naive=%.2f\n", copyRate/naive)
	fmt.Printf("copier_peak_rss_mib=%.0f\n", rss)
	return nil
}

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
		WithField(entity.NewField().WithName("vec").WithDataType(entity.FieldTypeFloatVector).WithDim(dim))
}

// rowBytes is the size of one row's fields as the copier measures a page.
func rowBytes() int {
	size := 0
	for _, f := range batch(100_000, 100) {
		size += proto.Size(f.FieldData())
	}
	return size / 100
}

func ptr[T any](v T) *T { return &v }

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

// timedLoad creates the collection and inserts pre-generated rows with
// workers concurrent inserters; it returns rows per second of the inserts
// alone, then indexes and loads the collection.
func timedLoad(ctx context.Context, addr string, rows, batchRows, workers int) (float64, error) {
	c, err := createCollection(ctx, addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	var batches [][]entity.Column
	for from := 1; from <= rows; from += batchRows {
		batches = append(batches, batch(from, min(batchRows, rows-from+1)))
	}
	work := make(chan []entity.Column)
	errc := make(chan error, workers)
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range work {
				if _, err := c.Insert(ctx, collection, "", b...); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	for _, b := range batches {
		work <- b
	}
	close(work)
	wg.Wait()
	elapsed := time.Since(start)
	select {
	case err := <-errc:
		return 0, err
	default:
	}
	// Seal and persist the rows now, so the server's background flush does
	// not run into the next measurement.
	if err := c.Flush(ctx, collection, false); err != nil {
		return 0, err
	}
	idx, err := entity.NewIndexFlat(entity.L2)
	if err != nil {
		return 0, err
	}
	if err := c.CreateIndex(ctx, collection, "vec", idx, false); err != nil {
		return 0, err
	}
	if err := c.LoadCollection(ctx, collection, false); err != nil {
		return 0, err
	}
	return float64(rows) / elapsed.Seconds(), nil
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

// zdmCopy runs an OFFLINE migration with two zdm processes, the copier in
// its own, and returns the copy stage's rows per second and the copier's
// peak resident memory.
func zdmCopy(ctx context.Context, bin, src, tgt string, workers, batchMiB int) (float64, float64, error) {
	dir, err := os.MkdirTemp("", "zdm-bench")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(dir)
	addrs, err := benchproc.FreeAddrs(5)
	if err != nil {
		return 0, 0, err
	}
	grpcAddr, natsAddr := addrs[0], addrs[1]
	coord := exec.CommandContext(ctx, bin, "-target", "coordinator,lag-monitor", "-grpc-addr", grpcAddr, "-metrics-addr", addrs[2],
		"-nats-listen", natsAddr, "-data-dir", filepath.Join(dir, "data"), "-log-level", "warn")
	coord.Stderr = os.Stderr
	if err := coord.Start(); err != nil {
		return 0, 0, err
	}
	defer benchproc.Stop(coord)
	if err := benchproc.WaitListening(grpcAddr); err != nil {
		return 0, 0, err
	}
	copier := exec.CommandContext(ctx, bin, "-target", "snapshot-copier", "-nats-url", "nats://"+natsAddr, "-grpc-addr", addrs[3],
		"-metrics-addr", addrs[4], "-copier-workers", strconv.Itoa(workers), "-copier-batch-mib", strconv.Itoa(batchMiB), "-log-level", "warn")
	copier.Stderr = os.Stderr
	if err := copier.Start(); err != nil {
		return 0, 0, err
	}
	defer benchproc.Stop(copier)

	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	clusters, mig := zdmpb.NewClusterServiceClient(conn), zdmpb.NewMigrationServiceClient(conn)
	for id, addr := range map[string]string{"src": src, "tgt": tgt} {
		if _, err := clusters.RegisterCluster(ctx, &zdmpb.RegisterClusterRequest{ClusterId: id, Connection: &zdmpb.ClusterConnection{Endpoint: addr}}); err != nil {
			return 0, 0, err
		}
	}
	if _, err := mig.CreateMigration(ctx, &zdmpb.CreateMigrationRequest{MigrationId: "bench", Type: zdmpb.MigrationType_MIGRATION_TYPE_OFFLINE,
		SourceClusterId: "src", TargetClusterId: "tgt", Options: &zdmpb.MigrationOptions{WorkUnitRows: 20_000}}); err != nil {
		return 0, 0, err
	}
	var peak float64
	for {
		peak = max(peak, benchproc.PeakRSS(copier.Process.Pid))
		resp, err := mig.GetMigration(ctx, &zdmpb.GetMigrationRequest{MigrationId: "bench"})
		if err != nil {
			return 0, 0, err
		}
		m := resp.GetMigration()
		switch m.GetState() {
		case zdmpb.MigrationState_MIGRATION_STATE_COMPLETED:
			for _, s := range m.GetStages() {
				if s.GetKind() == zdmpb.StageKind_STAGE_KIND_COPY_DATA {
					d := s.GetEndTime().AsTime().Sub(s.GetStartTime().AsTime())
					var rows int64
					for _, c := range m.GetCollections() {
						rows += c.GetRowsCopied()
					}
					return float64(rows) / d.Seconds(), peak, nil
				}
			}
			return 0, 0, errors.New("no copy stage")
		case zdmpb.MigrationState_MIGRATION_STATE_FAILED:
			return 0, 0, fmt.Errorf("migration failed: %s", m.GetError().GetMessage())
		}
		time.Sleep(200 * time.Millisecond)
	}
}
