package natsbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Conn is a NATS connection with its JetStream context.
type Conn struct {
	NC *nats.Conn
	JS jetstream.JetStream
	// Replicas is how many copies streams and KV buckets keep: 1 on the
	// embedded server, 3 or 5 on a NATS cluster.
	Replicas int
}

// Connect dials url (or, when inProcess is not nil, connects in-process to
// an embedded server) and returns a JetStream-ready connection that
// reconnects forever. name identifies the client in the server's monitoring.
func Connect(url string, inProcess nats.InProcessConnProvider, name string, logger *slog.Logger) (*Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				logger.Warn("NATS disconnected", slog.Any("error", err))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			logger.Info("NATS reconnected", slog.String("url", nc.ConnectedUrlRedacted()))
		}),
	}
	if inProcess != nil {
		opts = append(opts, nats.InProcessServer(inProcess))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %q: %w", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("JetStream context: %w", err)
	}
	return &Conn{NC: nc, JS: js, Replicas: 1}, nil
}

// Close drains the connection, so acknowledgements and publishes in flight
// are delivered, and waits until it is closed or ctx is done.
func (c *Conn) Close(ctx context.Context) error {
	closed := make(chan struct{})
	c.NC.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := c.NC.Drain(); err != nil {
		if errors.Is(err, nats.ErrConnectionClosed) {
			return nil
		}
		c.NC.Close()
		return fmt.Errorf("drain NATS connection: %w", err)
	}
	select {
	case <-closed:
		return nil
	case <-ctx.Done():
		c.NC.Close()
		return fmt.Errorf("drain NATS connection: %w", ctx.Err())
	}
}

// StopConsuming drains cc, letting the message in hand finish, and waits
// until it has stopped or ctx is done, then stops it outright. A nil cc is
// a no-op.
func StopConsuming(ctx context.Context, cc jetstream.ConsumeContext) {
	if cc == nil {
		return
	}
	cc.Drain()
	select {
	case <-cc.Closed():
	case <-ctx.Done():
		cc.Stop()
	}
}
