// Package natsbus is zdm's message bus on NATS JetStream: the embedded
// server that bin/zdm runs by default, client connections, the streams every
// service relies on, and publishing and consuming protobuf messages with
// message-ID deduplication and trace context in headers.
package natsbus
