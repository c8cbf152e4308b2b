package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/milvus-io/milvus-sdk-go/v2/client"
	"github.com/stretchr/testify/require"

	"github.com/zdm-io/zdm/pkg/ztest"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// jaeger is a real Jaeger (v2, spans in memory) of a test's own.
type jaeger struct {
	otlp, ui string
}

// startJaeger runs the Jaeger that make jaeger builds into .bin/
// (ZDM_JAEGER_BIN names another) with the repository's configuration, on
// ports of its own, until the test ends.
func startJaeger(t *testing.T) jaeger {
	t.Helper()
	repo, err := filepath.Abs("../..")
	require.NoError(t, err)
	bin := os.Getenv("ZDM_JAEGER_BIN")
	if bin == "" {
		bin = filepath.Join(repo, ".bin", "jaeger")
	}
	if _, err := os.Stat(bin); err != nil {
		ztest.Missing(t, "Jaeger ("+bin+"; make jaeger-bin builds it)")
	}
	j := jaeger{otlp: freeAddr(t), ui: freeAddr(t)}
	cmd := exec.Command(bin, "--config", filepath.Join(repo, "deploy", "jaeger", "config.yaml"))
	cmd.Env = append(os.Environ(), "OTEL_SDK_DISABLED=true", "ZDM_JAEGER_OTLP="+j.otlp, "ZDM_JAEGER_UI="+j.ui, "ZDM_JAEGER_GRPC="+freeAddr(t))
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("jaeger:\n%s", logs.String())
		}
	})
	ztest.Eventually(t, time.Minute, func() bool {
		resp, err := http.Get("http://" + j.ui + "/api/services")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == http.StatusOK
	}, "Jaeger does not answer on %s; logs:\n%s", j.ui, lazy(logs.String))
	return j
}

// jaegerTrace is a trace as Jaeger's query API returns it.
type jaegerTrace struct {
	TraceID string `json:"traceID"`
	Spans   []struct {
		TraceID       string `json:"traceID"`
		SpanID        string `json:"spanID"`
		OperationName string `json:"operationName"`
		ProcessID     string `json:"processID"`
		References    []struct {
			RefType string `json:"refType"`
			SpanID  string `json:"spanID"`
		} `json:"references"`
		Tags []struct {
			Key   string `json:"key"`
			Value any    `json:"value"`
		} `json:"tags"`
	} `json:"spans"`
	Processes map[string]struct {
		ServiceName string `json:"serviceName"`
	} `json:"processes"`
}

// get asks Jaeger's HTTP query API for path and decodes its traces.
func (j jaeger) get(t *testing.T, path string) []jaegerTrace {
	t.Helper()
	resp, err := http.Get("http://" + j.ui + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	var out struct {
		Data []jaegerTrace `json:"data"`
	}
	if resp.StatusCode == http.StatusNotFound {
		return nil
	}
	require.Equal(t, http.StatusOK, resp.StatusCode, path)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	return out.Data
}

// services are the services of tr's spans, and operations its span names
// by service.
func (tr jaegerTrace) services() map[string][]string {
	out := map[string][]string{}
	for _, s := range tr.Spans {
		name := tr.Processes[s.ProcessID].ServiceName
		out[name] = append(out[name], s.OperationName)
	}
	return out
}

// TestE2ETraceInJaeger: the four services run as processes of their own
// and export to a real Jaeger. One ZERO_DOWNTIME migration, with writes
// through the gateway and a stop sync, is one trace: spans of all four
// services share the trace ID the migration records, the path of a
// sampled change (gateway, bus, applier) is in it, and no span tagged with
// the migration is in any other trace.
func TestE2ETraceInJaeger(t *testing.T) {
	ztest.Integration(t)
	j := startJaeger(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+j.otlp)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "200")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	_, nats := ztest.Bus(t)
	srcAddr, tgtAddr := ztest.NewServer(t, "lite3"), ztest.NewServer(t, "lite3")
	seedShop(t, ctx, srcAddr, 1000)
	r := processes{t, nats.ClientURL()}
	coordAddr, gw := freeAddr(t), freeAddr(t)
	coord := r.zdm("coordinator", coordAddr, "-coordinator-event-ack-wait", "1s")
	r.zdm("snapshot-copier", freeAddr(t))
	r.zdm("lag-monitor", freeAddr(t))
	gate := r.zdm("cdc-streamer", freeAddr(t), "-gateway-cluster", "src", "-gateway-addr", gw)
	waitHealthy(t, coordAddr, coord.logs)
	conn := dial(t, coordAddr)
	mig := zdmpb.NewMigrationServiceClient(conn)
	registerPair(t, ctx, zdmpb.NewClusterServiceClient(conn), srcAddr, tgtAddr)
	app, err := client.NewClient(ctx, client.Config{Address: gw, DBName: "shop"})
	require.NoError(t, err, "gateway logs:\n%s", lazy(gate.logs.String))
	defer app.Close()

	createWhenServed(t, ctx, mig, &zdmpb.CreateMigrationRequest{MigrationId: "tr", Type: zdmpb.MigrationType_MIGRATION_TYPE_ZERO_DOWNTIME,
		SourceClusterId: "src", TargetClusterId: "tgt", Options: &zdmpb.MigrationOptions{WorkUnitRows: 1000}})
	m := waitMigration(t, ctx, mig, "tr", 2*time.Minute, func(m *zdmpb.Migration) bool {
		return m.GetState() == zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE || terminal(m)
	}, nil)
	require.Equal(t, zdmpb.MigrationState_MIGRATION_STATE_READY_TO_FINALIZE, m.GetState(), "error: %v", m.GetError())
	require.Len(t, m.GetTraceId(), 32, "the migration records its trace")
	// Changes through the gateway: the collection's first is sampled.
	for i := range 3 {
		insertItems(t, ctx, app, "", 5000+i, 5000+i)
	}
	_, err = mig.StopSync(ctx, &zdmpb.StopSyncRequest{MigrationId: "tr", ConfirmWritesStopped: true})
	require.NoError(t, err)
	m = waitMigration(t, ctx, mig, "tr", 2*time.Minute, terminal, nil)
	require.Equal(t, zdmpb.MigrationState_MIGRATION_STATE_COMPLETED, m.GetState(), "error: %v", m.GetError())

	// Every service's spans of the migration, and the change's path.
	want := map[string][]string{
		"zdm-coordinator":     {"zdm.v1.MigrationService/CreateMigration", "create migration", "transition to COPYING", "transition to COMPLETED"},
		"zdm-snapshot-copier": {"PREPARE_TARGET START", "COPY_DATA START", "copy unit"},
		"zdm-cdc-streamer":    {"capture changes", "apply sampled changes", "apply changes"},
		"zdm-lag-monitor":     {"VERIFY START"},
	}
	var tr jaegerTrace
	ztest.Eventually(t, 30*time.Second, func() bool {
		traces := j.get(t, "/api/traces/"+m.GetTraceId())
		if len(traces) != 1 {
			return false
		}
		tr = traces[0]
		got := tr.services()
		for svc, ops := range want {
			for _, op := range ops {
				if !slices.Contains(got[svc], op) {
					return false
				}
			}
		}
		return true
	}, "trace %s lacks spans: want %v; got %v", m.GetTraceId(), want, lazy(func() string { return fmt.Sprint(tr.services()) }))

	byID := map[string]string{}
	for _, s := range tr.Spans {
		require.Equal(t, m.GetTraceId(), s.TraceID)
		byID[s.SpanID] = tr.Processes[s.ProcessID].ServiceName + ": " + s.OperationName
	}
	// A sampled change went gateway -> NATS -> applier: the applier's
	// span is a child of the gateway's.
	parents := map[string]bool{}
	for _, s := range tr.Spans {
		if s.OperationName != "apply sampled changes" {
			continue
		}
		for _, ref := range s.References {
			if ref.RefType == "CHILD_OF" {
				parents[byID[ref.SpanID]] = true
			}
		}
	}
	require.True(t, parents["zdm-cdc-streamer: capture changes"], "parents of the applier's sampled spans: %v", parents)

	// No span about the migration is in another trace.
	for svc := range want {
		tags := url.QueryEscape(`{"zdm.migration_id":"tr"}`)
		for _, other := range j.get(t, "/api/traces?service="+svc+"&tags="+tags+"&lookback=1h&limit=1000") {
			require.Equal(t, m.GetTraceId(), other.TraceID, "%s has a span of the migration in another trace: %v", svc, other.services())
		}
	}
	// Bookkeeping makes no spans: a week of lag reports would bury the
	// migration.
	for _, s := range tr.Spans {
		require.NotContains(t, []string{"coordinator.lag_report", "coordinator.progress"}, s.OperationName)
	}
	t.Logf("trace %s: %d spans; by service: %v", m.GetTraceId(), len(tr.Spans), lazy(func() string {
		n := map[string]int{}
		for svc, ops := range tr.services() {
			n[svc] = len(ops)
		}
		return fmt.Sprint(n)
	}))
}
