package auth

import "context"

type actorKey struct{}

// Anonymous is the actor of calls made without authentication
// (--insecure-no-auth).
const Anonymous = "anonymous"

// System is the actor of changes made by zdm itself: stage events, timers.
const System = "system"

// WithActor returns ctx carrying the caller's name.
func WithActor(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, actorKey{}, name)
}

// Actor returns the caller's name: an API key's name, or Anonymous.
func Actor(ctx context.Context) string {
	if n, ok := ctx.Value(actorKey{}).(string); ok && n != "" {
		return n
	}
	return Anonymous
}
