// Command zdm runs any set of zdm's services (coordinator, snapshot-copier,
// cdc-streamer, lag-monitor) in one process, with an embedded NATS
// JetStream server unless --nats-url names one. See docs/operations.md.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/zdm-io/zdm/cmd/zdm/internal/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := app.Main(ctx, os.Args[1:], os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "zdm:", err)
		os.Exit(1)
	}
}
