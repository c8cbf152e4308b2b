// Command zdm runs any set of zdm's services (coordinator, snapshot-copier,
// cdc-streamer, lag-monitor) in one process, with an embedded NATS
// JetStream server unless --nats-url names one (zdm [serve] [flags]), and
// is the client that drives a running zdm (zdm cluster …, zdm migrate …,
// zdm verify). See docs/operations.md.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/zdm-io/zdm/cmd/zdm/internal/app"
	"github.com/zdm-io/zdm/cmd/zdm/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	args := os.Args[1:]
	if len(args) > 0 && cli.IsCommand(args[0]) {
		code := cli.Run(ctx, args, os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	if len(args) > 0 && args[0] == "serve" {
		args = args[1:]
	}
	err := app.Main(ctx, args, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "zdm:", err)
		os.Exit(1)
	}
}
