// Command benchcdc measures what the gateway costs the applications that
// write through it, on the test rig's primary tier (make bench-cdc). It
// prints one name=value line per figure.
//
// zdm runs as a process of its own with its gateway in front of the
// source. (a) Latency: one writer inserts 10 rows of 768-dim vectors at a
// steady 200 requests/s, straight to the source, then through the
// gateway; the p99 of each and their difference. (b) Saturation: 8
// writers insert as fast as they can, straight and through the gateway;
// rows/s of each, their ratio, and the CPU the zdm process spends per CPU
// second of the source Milvus in the gateway run, read from /proc.
// Capture is not in place yet: these are the figures of the gateway as a
// transparent proxy.
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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/milvus-io/milvus-sdk-go/v2/client"
	"github.com/milvus-io/milvus-sdk-go/v2/entity"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/zdm-io/zdm/cmd/zdm/internal/benchproc"
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

	gw, zdm, err := startZDM(ctx, *zdmBin, src)
	if err != nil {
		return err
	}
	defer benchproc.Stop(zdm)

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
	directRate, err := saturate(ctx, direct, *writers, *saturateFor)
	if err != nil {
		return fmt.Errorf("direct saturation: %w", err)
	}
	zdmCPU0, srcCPU0 := benchproc.CPUSeconds([]int{zdm.Process.Pid}), benchproc.CPUSeconds(benchproc.GroupPids(sourcePgid))
	gatewayRate, err := saturate(ctx, viaGateway, *writers, *saturateFor)
	if err != nil {
		return fmt.Errorf("gateway saturation: %w", err)
	}
	zdmCPU, srcCPU := benchproc.CPUSeconds([]int{zdm.Process.Pid})-zdmCPU0, benchproc.CPUSeconds(benchproc.GroupPids(sourcePgid))-srcCPU0

	fmt.Printf("direct_p99_ms=%.2f\n", directP99)
	fmt.Printf("gateway_p99_ms=%.2f\n", gatewayP99)
	fmt.Printf("gateway_added_p99_ms=%.2f\n", gatewayP99-directP99)
	fmt.Printf("direct_rows_per_s=%.0f\n", directRate)
	fmt.Printf("gateway_rows_per_s=%.0f\n", gatewayRate)
	fmt.Printf("gateway_throughput_ratio=%.2f\n", gatewayRate/directRate)
	fmt.Printf("zdm_cpu_per_source_cpu=%.3f\n", zdmCPU/srcCPU)
	return nil
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
	return c.CreateCollection(ctx, schema, 1)
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

// startZDM runs the coordinator and the gateway in one process in front of
// the source, registered as "src", and returns the gateway's address.
func startZDM(ctx context.Context, bin, src string) (string, *exec.Cmd, error) {
	addrs, err := benchproc.FreeAddrs(3)
	if err != nil {
		return "", nil, err
	}
	grpcAddr, gw := addrs[0], addrs[2]
	dir, err := os.MkdirTemp("", "benchcdc")
	if err != nil {
		return "", nil, err
	}
	cmd := exec.CommandContext(ctx, bin, "-target", "coordinator,cdc-streamer", "-grpc-addr", grpcAddr, "-metrics-addr", addrs[1],
		"-nats-listen", "", "-data-dir", filepath.Join(dir, "data"), "-gateway-cluster", "src", "-gateway-addr", gw, "-log-level", "warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	if err := benchproc.WaitListening(gw); err != nil {
		benchproc.Stop(cmd)
		return "", nil, err
	}
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		benchproc.Stop(cmd)
		return "", nil, err
	}
	defer conn.Close()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := zdmpb.NewClusterServiceClient(conn).RegisterCluster(rctx, &zdmpb.RegisterClusterRequest{ClusterId: "src",
		Connection: &zdmpb.ClusterConnection{Endpoint: src}}); err != nil {
		benchproc.Stop(cmd)
		return "", nil, fmt.Errorf("register the source: %w", err)
	}
	return gw, cmd, nil
}

func readPid(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("source pid file: %w (run make testenv-up)", err)
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}
