package coordinator

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"unicode"

	"github.com/zdm-io/zdm/pkg/apierr"
	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// What the public API checks before it touches state: the IDs a request
// carries and a cluster's endpoint. Page tokens are in pagetoken.go.

// idExpr is the format of cluster and migration IDs: usable as KV keys,
// NATS subject tokens and DNS labels. idForm says it to callers.
const (
	idExpr   = `[a-z][a-z0-9-]{0,62}`
	idForm   = "1 to 63 lowercase letters, digits or '-', starting with a letter"
	maxIDLen = 63
)

var idPattern = regexp.MustCompile(`^` + idExpr + `$`)

// idField is one ID a request carries.
type idField struct {
	field    string // the request's field, as the proto names it
	kind     string // "cluster" or "migration"
	value    string
	optional bool // "" means not given, and is allowed
}

func clusterID(field, v string) idField   { return idField{field: field, kind: "cluster", value: v} }
func migrationID(field, v string) idField { return idField{field: field, kind: "migration", value: v} }
func optional(f idField) idField          { f.optional = true; return f }

// migrationRequest is a request that names one existing migration.
type migrationRequest interface{ GetMigrationId() string }

// requestIDs returns the IDs req carries, for every request of
// MigrationService and ClusterService; ok is false for any other request.
// validate_test.go checks that every method's request is here and that
// every "_id" field of it is listed.
func requestIDs(req any) (ids []idField, ok bool) {
	switch r := req.(type) {
	case *zdmpb.RegisterClusterRequest:
		return []idField{clusterID("cluster_id", r.GetClusterId())}, true
	case *zdmpb.GetClusterRequest:
		return []idField{clusterID("cluster_id", r.GetClusterId())}, true
	case *zdmpb.DeregisterClusterRequest:
		return []idField{clusterID("cluster_id", r.GetClusterId())}, true
	case *zdmpb.ListClustersRequest:
		return nil, true
	case *zdmpb.CreateMigrationRequest:
		return []idField{
			optional(migrationID("migration_id", r.GetMigrationId())),
			clusterID("source_cluster_id", r.GetSourceClusterId()),
			clusterID("target_cluster_id", r.GetTargetClusterId()),
		}, true
	case *zdmpb.ListMigrationsRequest:
		return []idField{optional(clusterID("cluster_id", r.GetClusterId()))}, true
	case *zdmpb.GetMigrationRequest, *zdmpb.WatchMigrationRequest, *zdmpb.StopSyncRequest,
		*zdmpb.SwitchoverRequest, *zdmpb.CancelMigrationRequest, *zdmpb.PauseMigrationRequest,
		*zdmpb.ResumeMigrationRequest, *zdmpb.SetThrottleRequest:
		return []idField{migrationID("migration_id", r.(migrationRequest).GetMigrationId())}, true
	}
	return nil, false
}

// checkIDs is the first step of every handler of the public API: an ID
// that is missing, malformed or too long is INVALID_ARGUMENT here, before
// it reaches a KV key or a subject (where it would be INTERNAL).
func checkIDs(req any) error {
	ids, ok := requestIDs(req)
	if !ok {
		// A handler added without its row in requestIDs; the test catches it.
		return fmt.Errorf("no ID rule for request %T", req)
	}
	for _, f := range ids {
		if err := f.check(); err != nil {
			return err
		}
	}
	return nil
}

func (f idField) check() error {
	switch {
	case f.value == "" && f.optional:
		return nil
	case f.value == "":
		return bad("%s is required: a %s ID of %s", f.field, f.kind, idForm)
	case len(f.value) > maxIDLen:
		// Not echoed: it can be as long as a gRPC message.
		return bad("%s ID (%s) is %d bytes long: want %s", f.kind, f.field, len(f.value), idForm)
	case !idPattern.MatchString(f.value):
		return bad("%s ID %q (%s): want %s", f.kind, f.value, f.field, idForm)
	}
	return nil
}

// maxEndpointLen bounds an endpoint: a DNS name of 253, brackets, ':' and a
// port.
const maxEndpointLen = 263

const endpointForm = "want host:port, for example milvus.internal:19530, 10.0.0.5:19530 or [fd00::5]:19530"

func validateConnection(conn *zdmpb.ClusterConnection) error {
	if err := validateEndpoint(conn.GetEndpoint()); err != nil {
		return err
	}
	if up := conn.GetUserPassword(); up != nil && up.GetUsername() == "" {
		return fmt.Errorf("%w: connection.user_password.username is empty", apierr.ErrInvalidArgument)
	}
	if t := conn.GetTls(); !t.GetEnabled() && (len(t.GetCaPem()) > 0 || len(t.GetClientCertPem()) > 0) {
		return fmt.Errorf("%w: connection.tls has certificates but enabled is false", apierr.ErrInvalidArgument)
	}
	return nil
}

// validateEndpoint refuses an endpoint that cannot be dialled as written,
// so that it is INVALID_ARGUMENT at once rather than a probe that waits
// out its timeout (a port out of range) or fails inside the SDK's parser.
func validateEndpoint(ep string) error {
	switch {
	case ep == "":
		return bad("connection.endpoint is required: %s", endpointForm)
	case len(ep) > maxEndpointLen:
		return bad("connection.endpoint is %d bytes long: %s", len(ep), endpointForm)
	case strings.Contains(ep, "://"):
		return bad("connection.endpoint %q has a scheme: %s; set connection.tls.enabled for TLS", ep, endpointForm)
	case strings.IndexFunc(ep, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) >= 0:
		return bad("connection.endpoint %q holds spaces or control characters: %s", ep, endpointForm)
	}
	host, port, err := net.SplitHostPort(ep)
	if err != nil {
		return bad("connection.endpoint %q: %s", ep, endpointForm)
	}
	if !validPort(port) {
		return bad("connection.endpoint %q: port %q: want a number from 1 to 65535", ep, port)
	}
	if !validHost(host, strings.HasPrefix(ep, "[")) {
		return bad("connection.endpoint %q: host %q is neither an IP address nor a host name: %s", ep, host, endpointForm)
	}
	return nil
}

func validPort(p string) bool {
	if p == "" || len(p) > 5 || strings.Trim(p, "0123456789") != "" {
		return false
	}
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535
}

// validHost accepts an IP address (in brackets when IPv6, and only then;
// no zone, which the SDK's URL parser refuses) or a DNS name: labels of 1
// to 63 letters, digits, '-' or '_' (Docker Compose names have it), not
// starting or ending with '-', 253 characters in all, an optional final
// dot, and a last label that is not all digits (that would be a malformed
// IPv4 address).
func validHost(h string, bracketed bool) bool {
	if ip, err := netip.ParseAddr(h); err == nil {
		return ip.Is6() == bracketed && ip.Zone() == ""
	}
	h = strings.TrimSuffix(h, ".")
	if bracketed || h == "" || len(h) > 253 {
		return false
	}
	labels := strings.Split(h, ".")
	for _, l := range labels {
		if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return strings.Trim(labels[len(labels)-1], "0123456789") != ""
}
