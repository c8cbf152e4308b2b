package milvusx

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"

	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-sdk-go/v2/client"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	zdmpb "github.com/zdm-io/zdm/proto/zdm/v1"
)

// DefaultDatabase is Milvus's default database, the only one on servers
// without database support (milvus-lite 2.5).
const DefaultDatabase = "default"

// ErrConnect marks a failure to connect to a cluster.
var ErrConnect = errors.New("connect to Milvus")

// Connect opens an SDK client to the cluster described by conn, using
// database db ("" for the default). It blocks until connected or ctx ends.
// A cluster that cannot be reached is an error wrapping ErrConnect; errors
// never contain the credentials. Open returns the client with its raw stub.
func Connect(ctx context.Context, conn *zdmpb.ClusterConnection, db string) (client.Client, error) {
	host, _, err := net.SplitHostPort(conn.GetEndpoint())
	if err != nil {
		return nil, fmt.Errorf("endpoint %q: want host:port", conn.GetEndpoint())
	}
	cfg := client.Config{Address: conn.GetEndpoint(), DBName: db}
	switch a := conn.GetAuth().(type) {
	case *zdmpb.ClusterConnection_UserPassword:
		cfg.Username, cfg.Password = a.UserPassword.GetUsername(), a.UserPassword.GetPassword()
	case *zdmpb.ClusterConnection_Token:
		cfg.APIKey = a.Token
	}
	if conn.GetTls().GetEnabled() {
		tc, err := TLSConfig(conn, host)
		if err != nil {
			return nil, err
		}
		opts := append([]grpc.DialOption{}, client.DefaultGrpcOpts...)
		cfg.DialOptions = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	}
	c, err := client.NewClient(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("%w at %s: %w", ErrConnect, conn.GetEndpoint(), redact(err, conn))
	}
	return c, nil
}

// TLSConfig is conn's TLS setup, for anything that dials a cluster; host,
// the endpoint's host, is the server name unless conn names another.
func TLSConfig(conn *zdmpb.ClusterConnection, host string) (*tls.Config, error) {
	t := conn.GetTls()
	tc := &tls.Config{ServerName: t.GetServerName(), MinVersion: tls.VersionTLS12}
	if tc.ServerName == "" {
		tc.ServerName = host
	}
	if len(t.GetCaPem()) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(t.GetCaPem()) {
			return nil, errors.New("tls.ca_pem holds no PEM certificate")
		}
		tc.RootCAs = pool
	}
	if len(t.GetClientCertPem()) > 0 || len(t.GetClientKeyPem()) > 0 {
		cert, err := tls.X509KeyPair(t.GetClientCertPem(), t.GetClientKeyPem())
		if err != nil {
			return nil, fmt.Errorf("tls client certificate and key: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// redact replaces any credential of conn that err's text might carry.
func redact(err error, conn *zdmpb.ClusterConnection) error {
	msg := err.Error()
	secrets := []string{conn.GetUserPassword().GetPassword(), conn.GetToken()}
	changed := false
	for _, s := range secrets {
		if len(s) >= 3 && strings.Contains(msg, s) {
			msg = strings.ReplaceAll(msg, s, "[redacted]")
			changed = true
		}
	}
	if !changed {
		return err
	}
	return errors.New(msg)
}

// ErrNotMilvus means a server answers gRPC but not Milvus's API.
var ErrNotMilvus = errors.New("answers gRPC but is not a Milvus server")

// CheckMilvus proves that the server behind c is Milvus by listing the
// collections of DefaultDatabase, a call that every Milvus server zdm
// meets answers (Milvus 2.3 and later, milvus-lite 2.5 and 3.x). Connect
// alone proves nothing: the SDK takes a server without Milvus's Connect
// call for an old Milvus, so it accepts any gRPC server. It returns an error
// wrapping ErrNotMilvus when the server lacks the call, and the call's
// error when it fails otherwise; a reply with a failed status still proves
// Milvus and is no error. It blocks until the reply or ctx's end.
func CheckMilvus(ctx context.Context, c client.Client) error {
	raw, err := Raw(c)
	if err != nil {
		return err
	}
	_, err = raw.ShowCollections(ctx, &milvuspb.ShowCollectionsRequest{DbName: DefaultDatabase})
	if IsUnimplemented(err) {
		return ErrNotMilvus
	}
	if err != nil {
		return fmt.Errorf("show collections: %w", err)
	}
	return nil
}

// ServerVersion returns the version the server reports, or "unknown" for
// servers without GetVersion (milvus-lite 2.5).
func ServerVersion(ctx context.Context, c client.Client) (string, error) {
	v, err := c.GetVersion(ctx)
	if IsUnimplemented(err) {
		return "unknown", nil
	}
	if err != nil {
		return "", fmt.Errorf("get version: %w", err)
	}
	return v, nil
}

// Databases lists the server's databases; servers without databases have
// only DefaultDatabase.
func Databases(ctx context.Context, c client.Client) ([]string, error) {
	dbs, err := c.ListDatabases(ctx)
	if IsUnimplemented(err) {
		return []string{DefaultDatabase}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list databases: %w", err)
	}
	out := make([]string, 0, len(dbs))
	for _, d := range dbs {
		out = append(out, d.Name)
	}
	return out, nil
}

// CollectionsIn lists the collections of database db, whatever database
// the client uses.
func CollectionsIn(ctx context.Context, c client.Client, db string) ([]string, error) {
	raw, err := Raw(c)
	if err != nil {
		return nil, err
	}
	resp, err := raw.ShowCollections(ctx, &milvuspb.ShowCollectionsRequest{DbName: db})
	if err != nil {
		return nil, fmt.Errorf("show collections of %s: %w", db, err)
	}
	if err := StatusError(resp.GetStatus()); err != nil {
		return nil, fmt.Errorf("show collections of %s: %w", db, err)
	}
	return resp.GetCollectionNames(), nil
}

// UserCollections returns every collection in every database, as
// "database.collection", sorted by database then name.
func UserCollections(ctx context.Context, c client.Client) ([]string, error) {
	dbs, err := Databases(ctx, c)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, db := range dbs {
		names, err := CollectionsIn(ctx, c, db)
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			out = append(out, db+"."+n)
		}
	}
	sort.Strings(out)
	return out, nil
}
