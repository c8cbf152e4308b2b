package ztest

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/stretchr/testify/require"
)

// MailOptions configure a MailServer.
type MailOptions struct {
	// TLS, when set, is offered with STARTTLS.
	TLS *tls.Config
	// User and Password, when set, are required (PLAIN), and over TLS
	// first when TLS is set, before any mail is taken.
	User, Password string
}

// MailServer is a real SMTP server (go-smtp) on a free local port that
// keeps every message it accepts.
type MailServer struct {
	// Addr is where it listens.
	Addr string
	opts MailOptions
	mu   sync.Mutex
	msgs []string
}

// StartMailServer starts a mail server that stops when t ends.
func StartMailServer(t testing.TB, opts MailOptions) *MailServer {
	t.Helper()
	s := &MailServer{opts: opts}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) { return &mailSession{s: s, conn: c}, nil }))
	srv.Domain, srv.TLSConfig = "localhost", opts.TLS
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s.Addr = lis.Addr().String()
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { _ = srv.Close() })
	return s
}

// Messages are the messages taken, headers and body, in order.
func (s *MailServer) Messages() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.msgs...)
}

// Count is how many messages taken contain substr.
func (s *MailServer) Count(substr string) int {
	n := 0
	for _, m := range s.Messages() {
		if strings.Contains(m, substr) {
			n++
		}
	}
	return n
}

type mailSession struct {
	s      *MailServer
	conn   *smtp.Conn
	authed bool
}

func (x *mailSession) Reset()        {}
func (x *mailSession) Logout() error { return nil }

func (x *mailSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (x *mailSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != x.s.opts.User || pass != x.s.opts.Password {
			return errors.New("bad credentials")
		}
		x.authed = true
		return nil
	}), nil
}

func (x *mailSession) Mail(string, *smtp.MailOptions) error {
	if _, tlsOn := x.conn.TLSConnectionState(); x.s.opts.TLS != nil && !tlsOn {
		return errors.New("STARTTLS first")
	}
	if x.s.opts.User != "" && !x.authed {
		return errors.New("log in first")
	}
	return nil
}

func (x *mailSession) Rcpt(string, *smtp.RcptOptions) error { return nil }

func (x *mailSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	x.s.mu.Lock()
	x.s.msgs = append(x.s.msgs, string(b))
	x.s.mu.Unlock()
	return nil
}
