// Package validate checks what callers of zdm's APIs send before it
// touches state: cluster and migration IDs, and cluster connections. Every
// refusal is apierr.ErrInvalidArgument with a message that says the form
// wanted.
package validate

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

// IDExpr is the format of cluster and migration IDs: usable as KV keys,
// NATS subject tokens and DNS labels. IDForm says it to callers.
const (
	IDExpr   = `[a-z][a-z0-9-]{0,62}`
	IDForm   = "1 to 63 lowercase letters, digits or '-', starting with a letter"
	maxIDLen = 63
)

var idPattern = regexp.MustCompile(`^` + IDExpr + `$`)

// ID refuses an ID that is missing, too long or malformed. field is the
// request's field ("migration_id"), kind what it names ("cluster").
func ID(field, kind, value string) error {
	switch {
	case value == "":
		return bad("%s is required: a %s ID of %s", field, kind, IDForm)
	case len(value) > maxIDLen:
		// Not echoed: it can be as long as a gRPC message.
		return bad("%s ID (%s) is %d bytes long: want %s", kind, field, len(value), IDForm)
	case !idPattern.MatchString(value):
		return bad("%s ID %q (%s): want %s", kind, value, field, IDForm)
	}
	return nil
}

// OptionalID is ID for a field that may be left empty.
func OptionalID(field, kind, value string) error {
	if value == "" {
		return nil
	}
	return ID(field, kind, value)
}

// bad is an InvalidArgument error.
func bad(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{apierr.ErrInvalidArgument}, a...)...)
}

// maxEndpointLen bounds an endpoint: a DNS name of 253, brackets, ':' and a
// port.
const maxEndpointLen = 263

const endpointForm = "want host:port, for example milvus.internal:19530, 10.0.0.5:19530 or [fd00::5]:19530"

// Connection refuses a cluster connection that cannot be used as written:
// its endpoint (see Endpoint), a user without a name, certificates with TLS
// off. field names it in the request ("connection", "source").
func Connection(field string, conn *zdmpb.ClusterConnection) error {
	if err := Endpoint(field+".endpoint", conn.GetEndpoint()); err != nil {
		return err
	}
	if up := conn.GetUserPassword(); up != nil && up.GetUsername() == "" {
		return bad("%s.user_password.username is empty", field)
	}
	if t := conn.GetTls(); !t.GetEnabled() && (len(t.GetCaPem()) > 0 || len(t.GetClientCertPem()) > 0) {
		return bad("%s.tls has certificates but enabled is false", field)
	}
	return nil
}

// Endpoint refuses an endpoint that cannot be dialled as written, so that
// it is INVALID_ARGUMENT at once rather than a probe that waits out its
// timeout (a port out of range) or fails inside the SDK's parser. field
// names it in the request ("connection.endpoint").
func Endpoint(field, ep string) error {
	switch {
	case ep == "":
		return bad("%s is required: %s", field, endpointForm)
	case len(ep) > maxEndpointLen:
		return bad("%s is %d bytes long: %s", field, len(ep), endpointForm)
	case strings.Contains(ep, "://"):
		return bad("%s %q has a scheme: %s; enable TLS with the connection's tls.enabled", field, ep, endpointForm)
	case strings.IndexFunc(ep, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) >= 0:
		return bad("%s %q holds spaces or control characters: %s", field, ep, endpointForm)
	}
	host, port, err := net.SplitHostPort(ep)
	if err != nil {
		return bad("%s %q: %s", field, ep, endpointForm)
	}
	if !validPort(port) {
		return bad("%s %q: port %q: want a number from 1 to 65535", field, ep, port)
	}
	if !validHost(host, strings.HasPrefix(ep, "[")) {
		return bad("%s %q: host %q is neither an IP address nor a host name: %s", field, ep, host, endpointForm)
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
