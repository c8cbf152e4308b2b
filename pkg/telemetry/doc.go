// Package telemetry builds the logger, tracer provider and meter provider
// that every zdm service receives from the binary that composes it. Nothing
// here installs process-wide globals: all roles can share one process and
// one test.
package telemetry
