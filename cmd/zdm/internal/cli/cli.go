// Package cli is the zdm client: the subcommands of the zdm binary that
// drive a running zdm through its gRPC API (zdm cluster …, zdm migrate …,
// zdm verify). See docs/operations.md.
package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Exit codes: what kind of error ended a command.
const (
	ExitOK          = 0
	ExitError       = 1 // any other error
	ExitUsage       = 2 // bad arguments (INVALID_ARGUMENT)
	ExitNotFound    = 3 // NOT_FOUND
	ExitState       = 4 // FAILED_PRECONDITION, ALREADY_EXISTS, OUT_OF_RANGE
	ExitAuth        = 5 // UNAUTHENTICATED, PERMISSION_DENIED
	ExitUnavailable = 6 // zdm does not answer (UNAVAILABLE, DEADLINE_EXCEEDED)
)

// IsCommand reports whether arg, the binary's first argument, names a
// client command rather than a server flag.
func IsCommand(arg string) bool { return arg == "cluster" || arg == "migrate" || arg == "verify" }

// usageError is a command line that does not parse.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// helpError is a command's help, asked for with -h: printed on stdout,
// exit 0.
type helpError struct{ text string }

func (e *helpError) Error() string { return e.text }

// Run runs the client command args and returns the exit code; output goes
// to stdout, errors (one line each) to stderr.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := &client{out: stdout}
	err := c.run(ctx, args)
	if err == nil {
		return ExitOK
	}
	var help *helpError
	if errors.As(err, &help) {
		fmt.Fprint(stdout, help.text)
		return ExitOK
	}
	var u *usageError
	if errors.As(err, &u) || errors.Is(err, flag.ErrHelp) {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "zdm:", u.msg)
		}
		return ExitUsage
	}
	code, line := explain(err, c.addr)
	fmt.Fprintln(stderr, "zdm:", line)
	return code
}

// explain turns an error from the API into an exit code and one line
// saying what is wrong and what to do.
func explain(err error, addr string) (int, string) {
	if errors.Is(err, errDiffer) {
		return ExitState, err.Error() + " (the table above names the collections)"
	}
	st, ok := status.FromError(err)
	if !ok {
		return ExitError, err.Error()
	}
	msg := st.Message()
	switch st.Code() {
	case codes.InvalidArgument:
		return ExitUsage, msg
	case codes.NotFound:
		return ExitNotFound, msg + " (list them with 'zdm cluster list' or 'zdm migrate list')"
	case codes.FailedPrecondition, codes.AlreadyExists, codes.OutOfRange:
		return ExitState, msg
	case codes.Unauthenticated:
		return ExitAuth, msg + " (set --api-key or ZDM_API_KEY)"
	case codes.PermissionDenied:
		return ExitAuth, msg + " (this needs an admin key)"
	case codes.Unavailable, codes.DeadlineExceeded:
		return ExitUnavailable, fmt.Sprintf("zdm at %s does not answer: %s (is it running? set --addr or ZDM_ADDR)", addr, msg)
	}
	return ExitError, fmt.Sprintf("%s: %s", strings.ToLower(st.Code().String()), msg)
}

// client is one command's connection settings and output.
type client struct {
	out    io.Writer
	addr   string
	apiKey string
	tls    bool
	tlsCA  string
	output string
	conn   *grpc.ClientConn
}

// flags returns the flag set of command name with the connection flags,
// which ZDM_ADDR, ZDM_API_KEY, ZDM_TLS, ZDM_TLS_CA and ZDM_OUTPUT also set.
func (c *client) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("zdm "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:7400", "host:port of zdm's gRPC API")
	fs.StringVar(&c.apiKey, "api-key", "", "API key (sent as 'authorization: Bearer <key>'); prefer ZDM_API_KEY")
	fs.BoolVar(&c.tls, "tls", false, "the API speaks TLS")
	fs.StringVar(&c.tlsCA, "tls-ca", "", "PEM file of the CAs that sign the API's certificate; empty trusts the system's")
	fs.StringVar(&c.output, "output", "text", "text, or json (the API's own JSON)")
	return fs
}

// parse parses args into fs, from the environment too, and returns the
// positional arguments, which must number want.
func (c *client) parse(fs *flag.FlagSet, args []string, want int, names string) ([]string, error) {
	// Flags may follow the positional arguments.
	var pos, rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if strings.HasPrefix(a, "-") {
			rest = append(rest, a)
			if !strings.Contains(a, "=") && i+1 < len(args) {
				if f := fs.Lookup(strings.TrimLeft(a, "-")); f != nil {
					if b, ok := f.Value.(interface{ IsBoolFlag() bool }); !ok || !b.IsBoolFlag() {
						rest, i = append(rest, args[i+1]), i+1
					}
				}
			}
			continue
		}
		pos = append(pos, a)
	}
	if err := ff.Parse(fs, rest, ff.WithEnvVarPrefix("ZDM")); errors.Is(err, flag.ErrHelp) {
		var b strings.Builder
		fmt.Fprintf(&b, "usage: %s (%s); flags may also come from ZDM_<FLAG>\n\n", fs.Name(), names)
		fs.SetOutput(&b)
		fs.PrintDefaults()
		return nil, &helpError{b.String()}
	} else if err != nil {
		return nil, usagef("%s: %v", fs.Name(), err)
	}
	if len(pos) != want {
		return nil, usagef("%s takes %s", fs.Name(), names)
	}
	if c.output != "text" && c.output != "json" {
		return nil, usagef("--output %q: want text or json", c.output)
	}
	return pos, nil
}

// dial connects to the API.
func (c *client) dial() error {
	creds := insecure.NewCredentials()
	if c.tls || c.tlsCA != "" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if c.tlsCA != "" {
			pem, err := os.ReadFile(c.tlsCA)
			if err != nil {
				return usagef("--tls-ca: %v", err)
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return usagef("--tls-ca %s: no PEM certificate in it", c.tlsCA)
			}
		}
		creds = credentials.NewTLS(cfg)
	}
	conn, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return usagef("--addr %q: %v", c.addr, err)
	}
	c.conn = conn
	return nil
}

// ctx adds the API key to a call's context, with a timeout unless the
// call streams.
func (c *client) ctx(ctx context.Context, stream bool) (context.Context, context.CancelFunc) {
	if c.apiKey != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.apiKey)
	}
	if stream {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, 30*time.Second)
}

// json prints m as the API's JSON.
func (c *client) json(m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(c.out, string(b))
	return err
}

func (c *client) run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usagef("want a command: cluster, migrate or verify")
	}
	var sub string
	if len(args) > 1 {
		sub = args[1]
	}
	switch args[0] {
	case "cluster":
		return c.cluster(ctx, sub, tail(args))
	case "migrate":
		return c.migrate(ctx, sub, tail(args))
	case "verify":
		return c.verify(ctx, args[1:])
	}
	return usagef("unknown command %q: want cluster, migrate or verify", args[0])
}

func tail(args []string) []string {
	if len(args) < 2 {
		return nil
	}
	return args[2:]
}
