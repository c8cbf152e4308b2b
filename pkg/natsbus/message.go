package natsbus

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/protobuf/proto"
)

// ErrNoMessageID is returned when a message is published without an ID:
// every bus message must be deduplicable.
var ErrNoMessageID = errors.New("bus message without message ID")

// Publish sends m on subject with msgID as its Nats-Msg-Id, so JetStream
// drops a duplicate published within DuplicateWindow, and with the trace
// context of ctx in its headers. It blocks until JetStream has stored the
// message (and, with SyncInterval 0, fsynced it). The returned ack tells
// whether the message was a duplicate.
func Publish(ctx context.Context, js jetstream.JetStream, prop propagation.TextMapPropagator, subject, msgID string, m proto.Message) (*jetstream.PubAck, error) {
	if msgID == "" {
		return nil, ErrNoMessageID
	}
	data, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("marshal %T: %w", m, err)
	}
	msg := nats.NewMsg(subject)
	msg.Data = data
	prop.Inject(ctx, propagation.HeaderCarrier(http.Header(msg.Header)))
	ack, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(msgID))
	if err != nil {
		return nil, fmt.Errorf("publish to %s: %w", subject, err)
	}
	return ack, nil
}

// Decode unmarshals a received message into m and returns ctx extended
// with the trace context its publisher sent.
func Decode(ctx context.Context, prop propagation.TextMapPropagator, msg jetstream.Msg, m proto.Message) (context.Context, error) {
	if err := proto.Unmarshal(msg.Data(), m); err != nil {
		return ctx, fmt.Errorf("unmarshal %T from %s: %w", m, msg.Subject(), err)
	}
	return prop.Extract(ctx, propagation.HeaderCarrier(http.Header(msg.Headers()))), nil
}

// GetProto reads key from kv into m and returns the key's revision.
// Errors: jetstream.ErrKeyNotFound (wrapped) when the key does not exist.
func GetProto(ctx context.Context, kv jetstream.KeyValue, key string, m proto.Message) (uint64, error) {
	e, err := kv.Get(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", key, err)
	}
	if err := proto.Unmarshal(e.Value(), m); err != nil {
		return 0, fmt.Errorf("decode %s at revision %d: %w", key, e.Revision(), err)
	}
	return e.Revision(), nil
}
