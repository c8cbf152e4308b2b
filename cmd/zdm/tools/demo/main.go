// Command demo is what make demo runs once two Milvus servers and Jaeger
// are up (deploy/demo/demo.sh starts them): it seeds the source with two
// databases and four collections, starts bin/zdm with its gateway in
// front of the source, sends an application's writes and searches
// through the gateway, and runs a ZERO_DOWNTIME migration to its
// switchover with zdm migrate watch on the screen. It ends with the
// verification result and where to look next.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/milvus-io/milvus-sdk-go/v2/client"
	"github.com/milvus-io/milvus-sdk-go/v2/entity"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/zdm-io/zdm/pkg/stage"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

const (
	dim       = 768 // the text embeddings' dimension
	apiAddr   = "127.0.0.1:7400"
	metrics   = "127.0.0.1:7401"
	gateway   = "127.0.0.1:19540"
	migration = "demo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

type options struct {
	zdm, dir, source, target, otlp, ui string
	keep                               bool
}

func run(ctx context.Context) error {
	var o options
	flag.StringVar(&o.zdm, "zdm", "bin/zdm", "zdm binary")
	flag.StringVar(&o.dir, "dir", ".demo", "where zdm's data, log and pid go")
	flag.StringVar(&o.source, "source", "", "source Milvus host:port")
	flag.StringVar(&o.target, "target", "", "target Milvus host:port")
	flag.StringVar(&o.otlp, "jaeger-otlp", "", "Jaeger's OTLP/gRPC address; empty sends no spans")
	flag.StringVar(&o.ui, "jaeger-ui", "", "Jaeger's query address")
	flag.BoolVar(&o.keep, "keep", false, "leave zdm running at the end")
	flag.Parse()
	if o.source == "" || o.target == "" {
		return errors.New("-source and -target are required")
	}
	ctx, cancel := context.WithTimeout(ctx, 9*time.Minute)
	defer cancel()

	step("Seeding the source %s: databases shop and support, four collections, 105,000 rows (100,000 with 768-dim embeddings)", o.source)
	for _, addr := range []string{o.source, o.target} {
		if err := reset(ctx, addr); err != nil {
			return err
		}
	}
	start := time.Now()
	if err := seed(ctx, o.source); err != nil {
		return fmt.Errorf("seed the source: %w", err)
	}
	fmt.Printf("   seeded in %s\n", time.Since(start).Round(time.Second))

	step("Starting zdm: API %s, metrics %s, the Milvus gateway in front of the source on %s", apiAddr, metrics, gateway)
	zdm, err := startZDM(ctx, o)
	if err != nil {
		return err
	}
	if !o.keep {
		defer zdm.stop()
	}
	conn, err := grpc.NewClient(apiAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	mig := zdmpb.NewMigrationServiceClient(conn)
	if err := o.cli(ctx, "cluster", "add", "src", "--endpoint", o.source, "--name", "source"); err != nil {
		return err
	}
	if err := o.cli(ctx, "cluster", "add", "tgt", "--endpoint", o.target, "--name", "target"); err != nil {
		return err
	}

	step("Starting the application: writes and searches through the gateway, as clients would once pointed at it")
	app, err := startApp(ctx, gateway)
	if err != nil {
		return err
	}
	defer app.stop()

	step("Migrating with zero downtime: snapshot, sync, and a switchover once the lag is under its threshold")
	fmt.Println("   $ zdm migrate create --id demo --source src --target tgt --work-unit-rows 10000")
	if err := create(ctx, mig); err != nil {
		return err
	}
	fmt.Println("   $ zdm migrate watch demo      (the demo runs zdm migrate switchover demo once it is ready)")
	switched := make(chan error, 1)
	go func() { switched <- switchWhenReady(ctx, mig) }()
	if err := o.cli(ctx, "migrate", "watch", migration); err != nil {
		return err
	}
	if err := <-switched; err != nil {
		return err
	}
	writes, reads, failed := app.stop()

	resp, err := mig.GetMigration(ctx, &zdmpb.GetMigrationRequest{MigrationId: migration})
	if err != nil {
		return err
	}
	m := resp.GetMigration()
	step("Result")
	if err := o.cli(ctx, "migrate", "show", migration); err != nil {
		return err
	}
	verify := m.GetStages()[len(m.GetStages())-1]
	fmt.Printf("\n   verification: %s %s\n", strings.TrimPrefix(verify.GetState().String(), "STAGE_STATE_"), verify.GetMessage())
	fmt.Printf("   application: %d writes and %d searches through the gateway, %d failed; writes paused %s at the switchover\n",
		writes, reads, failed, m.GetSwitchoverWritePause().AsDuration().Round(time.Millisecond))
	if m.GetState() != zdmpb.MigrationState_MIGRATION_STATE_COMPLETED || verify.GetState() != zdmpb.StageState_STAGE_STATE_SUCCEEDED || failed > 0 {
		return fmt.Errorf("the migration did not end as it should: %s, verification %s, %d failed calls; zdm's log: %s",
			m.GetState(), verify.GetState(), failed, zdm.log)
	}

	step("Where to look next")
	if o.ui != "" {
		showTrace(ctx, o.ui, m.GetTraceId())
	} else {
		fmt.Printf("   the migration's trace %s was not sent: make jaeger-bin builds Jaeger (once), and the next make demo sends it\n", m.GetTraceId())
	}
	showMetrics(ctx)
	fmt.Println("   docs/operations.md: the CLI, every metric, tracing, running zdm in production")
	fmt.Printf("   zdm's log: %s\n", zdm.log)
	return nil
}

func step(format string, args ...any) {
	fmt.Printf("\n== "+format+"\n", args...)
}

// cli runs a zdm CLI command on the terminal.
func (o options) cli(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, o.zdm, append(args, "--addr", apiAddr)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("zdm %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

// reset drops what an earlier run of the demo left on addr.
func reset(ctx context.Context, addr string) error {
	admin, err := client.NewClient(ctx, client.Config{Address: addr})
	if err != nil {
		return fmt.Errorf("connect to %s: %w", addr, err)
	}
	defer admin.Close()
	dbs, err := admin.ListDatabases(ctx)
	if err != nil {
		return err
	}
	for _, db := range dbs {
		if db.Name != "shop" && db.Name != "support" {
			continue
		}
		c, err := client.NewClient(ctx, client.Config{Address: addr, DBName: db.Name})
		if err != nil {
			return err
		}
		colls, err := c.ListCollections(ctx)
		for _, coll := range colls {
			if err == nil {
				err = c.DropCollection(ctx, coll.Name)
			}
		}
		c.Close()
		if err != nil {
			return err
		}
		if err := admin.DropDatabase(ctx, db.Name); err != nil {
			return err
		}
	}
	return nil
}

// collection is one collection of the data set: its schema and how to
// make rows [from, from+n).
type collection struct {
	db     string
	schema *entity.Schema
	rows   int
	index  string // the vector field
	make   func(from, n int) []entity.Column
}

func dataset() []collection {
	return []collection{
		{db: "shop", rows: 50_000, index: "embedding", make: products, schema: entity.NewSchema().WithName("products").
			WithDescription("catalogue with text embeddings").
			WithField(entity.NewField().WithName("id").WithDataType(entity.FieldTypeInt64).WithIsPrimaryKey(true)).
			WithField(entity.NewField().WithName("title").WithDataType(entity.FieldTypeVarChar).WithMaxLength(128)).
			WithField(entity.NewField().WithName("price").WithDataType(entity.FieldTypeFloat)).
			WithField(entity.NewField().WithName("attrs").WithDataType(entity.FieldTypeJSON)).
			WithField(entity.NewField().WithName("embedding").WithDataType(entity.FieldTypeFloatVector).WithDim(dim))},
		{db: "shop", rows: 30_000, index: "embedding", make: reviews, schema: entity.NewSchema().WithName("reviews").
			WithDescription("reviews keyed by string, partitioned by product").
			WithField(entity.NewField().WithName("review_id").WithDataType(entity.FieldTypeVarChar).WithMaxLength(40).WithIsPrimaryKey(true)).
			WithField(entity.NewField().WithName("product_id").WithDataType(entity.FieldTypeInt64).WithIsPartitionKey(true)).
			WithField(entity.NewField().WithName("stars").WithDataType(entity.FieldTypeInt8)).
			WithField(entity.NewField().WithName("embedding").WithDataType(entity.FieldTypeFloatVector).WithDim(dim))},
		{db: "support", rows: 20_000, index: "embedding", make: tickets, schema: entity.NewSchema().WithName("tickets").
			WithDescription("tickets with dynamic fields").WithDynamicFieldEnabled(true).
			WithField(entity.NewField().WithName("id").WithDataType(entity.FieldTypeInt64).WithIsPrimaryKey(true)).
			WithField(entity.NewField().WithName("body").WithDataType(entity.FieldTypeVarChar).WithMaxLength(512)).
			WithField(entity.NewField().WithName("embedding").WithDataType(entity.FieldTypeFloatVector).WithDim(dim))},
		{db: "support", rows: 5_000, index: "fingerprint", make: faq, schema: entity.NewSchema().WithName("faq").
			WithDescription("questions with binary fingerprints").
			WithField(entity.NewField().WithName("id").WithDataType(entity.FieldTypeInt64).WithIsPrimaryKey(true)).
			WithField(entity.NewField().WithName("question").WithDataType(entity.FieldTypeVarChar).WithMaxLength(256)).
			WithField(entity.NewField().WithName("fingerprint").WithDataType(entity.FieldTypeBinaryVector).WithDim(256))},
	}
}

func vectors(r *rand.Rand, n int) [][]float32 {
	out := make([][]float32, n)
	for i := range out {
		v := make([]float32, dim)
		for j := range v {
			v[j] = r.Float32()
		}
		out[i] = v
	}
	return out
}

func products(from, n int) []entity.Column {
	r := rand.New(rand.NewPCG(uint64(from), 1))
	ids, titles, prices, attrs := make([]int64, n), make([]string, n), make([]float32, n), make([][]byte, n)
	for i := range n {
		id := from + i
		ids[i], titles[i], prices[i] = int64(id), "product "+strconv.Itoa(id), float32(1+r.IntN(50_000))/100
		attrs[i] = fmt.Appendf(nil, `{"colour":%q,"stock":%d}`, []string{"red", "green", "blue"}[id%3], r.IntN(100))
	}
	return []entity.Column{entity.NewColumnInt64("id", ids), entity.NewColumnVarChar("title", titles), entity.NewColumnFloat("price", prices),
		entity.NewColumnJSONBytes("attrs", attrs), entity.NewColumnFloatVector("embedding", dim, vectors(r, n))}
}

func reviews(from, n int) []entity.Column {
	r := rand.New(rand.NewPCG(uint64(from), 2))
	ids, products, stars := make([]string, n), make([]int64, n), make([]int8, n)
	for i := range n {
		id := from + i
		ids[i], products[i], stars[i] = fmt.Sprintf("rev-%08d", id), int64(1+id%5000), int8(1+r.IntN(5))
	}
	return []entity.Column{entity.NewColumnVarChar("review_id", ids), entity.NewColumnInt64("product_id", products),
		entity.NewColumnInt8("stars", stars), entity.NewColumnFloatVector("embedding", dim, vectors(r, n))}
}

func tickets(from, n int) []entity.Column {
	r := rand.New(rand.NewPCG(uint64(from), 3))
	ids, bodies, meta := make([]int64, n), make([]string, n), make([][]byte, n)
	for i := range n {
		id := from + i
		ids[i], bodies[i] = int64(id), fmt.Sprintf("ticket %d: the order did not arrive", id)
		meta[i] = fmt.Appendf(nil, `{"priority":%d,"team":%q}`, id%4, []string{"billing", "delivery"}[id%2])
	}
	return []entity.Column{entity.NewColumnInt64("id", ids), entity.NewColumnVarChar("body", bodies),
		entity.NewColumnFloatVector("embedding", dim, vectors(r, n)), entity.NewColumnJSONBytes("$meta", meta).WithIsDynamic(true)}
}

func faq(from, n int) []entity.Column {
	r := rand.New(rand.NewPCG(uint64(from), 4))
	ids, questions, prints := make([]int64, n), make([]string, n), make([][]byte, n)
	for i := range n {
		id := from + i
		ids[i], questions[i] = int64(id), fmt.Sprintf("how do I change order %d?", id)
		b := make([]byte, 32)
		for j := range b {
			b[j] = byte(r.UintN(256))
		}
		prints[i] = b
	}
	return []entity.Column{entity.NewColumnInt64("id", ids), entity.NewColumnVarChar("question", questions),
		entity.NewColumnBinaryVector("fingerprint", 256, prints)}
}

// seed creates the data set on addr, indexed and loaded (the application
// searches it).
func seed(ctx context.Context, addr string) error {
	admin, err := client.NewClient(ctx, client.Config{Address: addr})
	if err != nil {
		return err
	}
	defer admin.Close()
	for _, db := range []string{"shop", "support"} {
		if err := admin.CreateDatabase(ctx, db); err != nil {
			return err
		}
	}
	for _, coll := range dataset() {
		c, err := client.NewClient(ctx, client.Config{Address: addr, DBName: coll.db})
		if err != nil {
			return err
		}
		err = seedOne(ctx, c, coll)
		c.Close()
		if err != nil {
			return fmt.Errorf("%s.%s: %w", coll.db, coll.schema.CollectionName, err)
		}
		fmt.Printf("   %s.%s: %d rows\n", coll.db, coll.schema.CollectionName, coll.rows)
	}
	return nil
}

func seedOne(ctx context.Context, c client.Client, coll collection) error {
	name := coll.schema.CollectionName
	opts := []client.CreateCollectionOption{}
	if name == "reviews" {
		opts = append(opts, client.WithPartitionNum(16))
	}
	if err := c.CreateCollection(ctx, coll.schema, 1, opts...); err != nil {
		return err
	}
	if name == "tickets" {
		if err := c.CreatePartition(ctx, name, "archive"); err != nil {
			return err
		}
	}
	// Two inserters: generating rows and inserting them overlap.
	const batch = 2000
	work, errc := make(chan int), make(chan error, 2)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for from := range work {
				part := ""
				if name == "tickets" && from > coll.rows*3/4 {
					part = "archive"
				}
				if _, err := c.Insert(ctx, name, part, coll.make(from, min(batch, coll.rows-from+1))...); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	for from := 1; from <= coll.rows; from += batch {
		select {
		case work <- from:
		case err := <-errc:
			close(work)
			wg.Wait()
			return err
		}
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
	}
	if err := c.Flush(ctx, name, false); err != nil {
		return err
	}
	var idx entity.Index
	var err error
	if coll.index == "fingerprint" {
		idx, err = entity.NewIndexBinFlat(entity.HAMMING, 16)
	} else {
		idx, err = entity.NewIndexFlat(entity.L2)
	}
	if err != nil {
		return err
	}
	if err := c.CreateIndex(ctx, name, coll.index, idx, false); err != nil {
		return err
	}
	return c.LoadCollection(ctx, name, false)
}

// zdmProcess is the zdm server the demo started.
type zdmProcess struct {
	cmd *exec.Cmd
	log string
}

func startZDM(ctx context.Context, o options) (*zdmProcess, error) {
	data := filepath.Join(o.dir, "data")
	if err := os.RemoveAll(data); err != nil {
		return nil, err
	}
	log := filepath.Join(o.dir, "zdm.log")
	out, err := os.Create(log)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd := exec.Command(o.zdm, "serve", "-grpc-addr", apiAddr, "-metrics-addr", metrics, "-data-dir", data,
		"-gateway-cluster", "src", "-gateway-addr", gateway, "-log-format", "text")
	cmd.Env = os.Environ()
	if o.otlp != "" {
		cmd.Env = append(cmd.Env, "OTEL_EXPORTER_OTLP_ENDPOINT=http://"+o.otlp, "OTEL_BSP_SCHEDULE_DELAY=500")
	}
	cmd.Stdout, cmd.Stderr = out, out
	// A session of its own: it outlives the demo with -keep.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &zdmProcess{cmd: cmd, log: log}
	if err := os.WriteFile(filepath.Join(o.dir, "zdm.pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		p.stop()
		return nil, err
	}
	if err := waitServing(ctx); err != nil {
		p.stop()
		return nil, fmt.Errorf("zdm did not start (%w); its log %s ends:\n%s", err, log, tail(log))
	}
	return p, nil
}

// waitServing waits until zdm's health says SERVING.
func waitServing(ctx context.Context) error {
	conn, err := grpc.NewClient(apiAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not serving on %s after 30s: %v", apiAddr, err)
		}
		if err := stage.Sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

func (p *zdmProcess) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-15):], "\n")
}

// app is the application: writers inserting, updating and deleting
// products and tickets, and a reader searching products, all through the
// gateway.
type app struct {
	writes, reads, failed atomic.Int64
	done                  chan struct{}
	wg                    sync.WaitGroup
	once                  sync.Once
}

func startApp(ctx context.Context, addr string) (*app, error) {
	a := &app{done: make(chan struct{})}
	shop, err := client.NewClient(ctx, client.Config{Address: addr, DBName: "shop"})
	if err != nil {
		return nil, fmt.Errorf("connect to the gateway: %w", err)
	}
	support, err := client.NewClient(ctx, client.Config{Address: addr, DBName: "support"})
	if err != nil {
		shop.Close()
		return nil, err
	}
	loop := func(every time.Duration, f func(i int) (write bool, err error)) {
		a.wg.Go(func() {
			t := time.NewTicker(every)
			defer t.Stop()
			for i := 0; ; i++ {
				select {
				case <-a.done:
					return
				case <-ctx.Done():
					return
				case <-t.C:
				}
				write, err := f(i)
				switch {
				case err != nil:
					a.failed.Add(1)
					fmt.Fprintf(os.Stderr, "demo: application call failed: %v\n", err)
				case write:
					a.writes.Add(1)
				default:
					a.reads.Add(1)
				}
			}
		})
	}
	// Products: a new one, a price change (upsert) or a removal.
	loop(40*time.Millisecond, func(i int) (bool, error) {
		switch i % 5 {
		case 3:
			_, err := shop.Upsert(ctx, "products", "", products(1+i%50_000, 1)...)
			return true, err
		case 4:
			return true, shop.DeleteByPks(ctx, "products", "", entity.NewColumnInt64("id", []int64{int64(100_000 + i - 2)}))
		default:
			_, err := shop.Insert(ctx, "products", "", products(100_000+i, 1)...)
			return true, err
		}
	})
	// Tickets: new ones, in batches of three.
	loop(100*time.Millisecond, func(i int) (bool, error) {
		_, err := support.Insert(ctx, "tickets", "", tickets(1_000_000+3*i, 3)...)
		return true, err
	})
	// Searches for similar products.
	sp, err := entity.NewIndexFlatSearchParam()
	if err != nil {
		return nil, err
	}
	r := rand.New(rand.NewPCG(9, 9))
	loop(100*time.Millisecond, func(int) (bool, error) {
		_, err := shop.Search(ctx, "products", nil, "price < 100", []string{"title"},
			[]entity.Vector{entity.FloatVector(vectors(r, 1)[0])}, "embedding", entity.L2, 5, sp)
		return false, err
	})
	go func() {
		a.wg.Wait()
		shop.Close()
		support.Close()
	}()
	return a, nil
}

// stop ends the application and returns its counts.
func (a *app) stop() (writes, reads, failed int64) {
	a.once.Do(func() { close(a.done) })
	a.wg.Wait()
	return a.writes.Load(), a.reads.Load(), a.failed.Load()
}

// create creates the migration, retrying while zdm is still starting:
// until its services have announced their stages and the gateway has
// registered, a ZERO_DOWNTIME migration is refused as not served.
func create(ctx context.Context, mig zdmpb.MigrationServiceClient) error {
	req := &zdmpb.CreateMigrationRequest{MigrationId: migration, Type: zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME,
		SourceClusterId: "src", TargetClusterId: "tgt", Options: &zdmpb.MigrationOptions{WorkUnitRows: 10_000}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := mig.CreateMigration(ctx, req)
		if err == nil || status.Code(err) != codes.FailedPrecondition || time.Now().After(deadline) {
			return err
		}
		if err := stage.Sleep(ctx, 500*time.Millisecond); err != nil {
			return err
		}
	}
}

// switchWhenReady asks for the switchover once the migration is ready to
// finalise, again if an attempt aborts (at most three), and returns once
// the migration has switched over.
func switchWhenReady(ctx context.Context, mig zdmpb.MigrationServiceClient) error {
	for attempts := 0; ; {
		if err := stage.Sleep(ctx, 500*time.Millisecond); err != nil {
			return err
		}
		resp, err := mig.GetMigration(ctx, &zdmpb.GetMigrationRequest{MigrationId: migration})
		if err != nil {
			continue // not created yet
		}
		m := resp.GetMigration()
		switch {
		case m.GetSwitchover().GetSwitchTime() != nil:
			return nil
		case m.GetEndTime() != nil:
			return fmt.Errorf("the migration ended without a switchover: %s %s", m.GetState(), m.GetError().GetMessage())
		case m.GetState() != zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE:
			continue
		case attempts == 3:
			return fmt.Errorf("three switchovers aborted, the last: %s", m.GetSwitchover().GetAbortReason())
		}
		attempts++
		if _, err := mig.Switchover(ctx, &zdmpb.SwitchoverRequest{MigrationId: migration, MaxWritePause: durationpb.New(time.Second)}); err != nil {
			return fmt.Errorf("switchover: %w", err)
		}
	}
}

// showTrace prints the migration's trace as Jaeger has it: its spans by
// service and the migration's transitions in order.
func showTrace(ctx context.Context, ui, id string) {
	fmt.Printf("   the migration's trace in Jaeger: http://%s/trace/%s\n", ui, id)
	var tr struct {
		Data []struct {
			Spans []struct {
				OperationName string `json:"operationName"`
				ProcessID     string `json:"processID"`
				StartTime     int64  `json:"startTime"`
			} `json:"spans"`
			Processes map[string]struct {
				ServiceName string `json:"serviceName"`
			} `json:"processes"`
		} `json:"data"`
	}
	// Spans are exported every half second; the last ones come after
	// the migration ends.
	if err := stage.Sleep(ctx, 2*time.Second); err != nil {
		return
	}
	if err := getJSON(ctx, "http://"+ui+"/api/traces/"+id, &tr); err != nil || len(tr.Data) == 0 {
		fmt.Printf("   (Jaeger has not got it yet: curl -s http://%s/api/traces/%s)\n", ui, id)
		return
	}
	t := tr.Data[0]
	perService := map[string]int{}
	type transition struct {
		at   int64
		name string
	}
	var transitions []transition
	for _, s := range t.Spans {
		perService[t.Processes[s.ProcessID].ServiceName]++
		if strings.HasPrefix(s.OperationName, "transition to ") {
			transitions = append(transitions, transition{s.StartTime, strings.TrimPrefix(s.OperationName, "transition to ")})
		}
	}
	var services []string
	for svc, n := range perService {
		services = append(services, fmt.Sprintf("%s %d", svc, n))
	}
	sort.Strings(services)
	sort.Slice(transitions, func(i, j int) bool { return transitions[i].at < transitions[j].at })
	var states []string
	for _, tr := range transitions {
		if len(states) == 0 || states[len(states)-1] != tr.name {
			states = append(states, tr.name)
		}
	}
	fmt.Printf("   %d spans: %s\n", len(t.Spans), strings.Join(services, ", "))
	fmt.Printf("   transitions: %s\n", strings.Join(states, " -> "))
	fmt.Printf("   its JSON: curl -s http://%s/api/traces/%s\n", ui, id)
}

// showMetrics prints a few of zdm's metrics.
func showMetrics(ctx context.Context) {
	fmt.Printf("   metrics: http://%s/metrics, for example:\n", metrics)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+metrics+"/metrics", nil)
	if err != nil {
		return
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return
	}
	shown := 0
	for line := range strings.SplitSeq(string(b), "\n") {
		if strings.HasPrefix(line, "zdm_") && shown < 8 {
			fmt.Println("     " + line)
			shown++
		}
	}
}

func getJSON(ctx context.Context, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
