# zdm: every target works on a fresh clone; tools are pinned and installed
# into .bin/ on first use. `make help` lists the targets.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

BIN_DIR := $(CURDIR)/.bin
export PATH := $(BIN_DIR):$(PATH)
export GOBIN := $(BIN_DIR)

# Pinned tool versions.
BUF_VERSION                := v1.75.0
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.0
STATICCHECK_VERSION        := v0.8.2
GRPCURL_VERSION            := v1.9.3
GOTESTSUM_VERSION          := v1.13.0

# Go packages of every module in go.work.
MODULES := $(shell sed -n 's/^\t\.\/\(.*\)$$/\1/p' go.work)
PKGS    := $(addprefix ./,$(addsuffix /...,$(MODULES)))

KEEP ?= 0

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/zdm-io/zdm/cmd/zdm/internal/app.Version=$(VERSION)

TESTENV := deploy/testenv/testenv.sh
# Loads the rig's addresses into the environment of a test command.
WITH_TESTENV := set -a; [ ! -f .testenv/env ] || . .testenv/env; set +a;

TOOL_STAMP = $(BIN_DIR)/.$(1)-$(2)
define tool
$(call TOOL_STAMP,$(1),$(2)):
	@rm -f $(BIN_DIR)/.$(1)-*
	go install $(3)@$(2)
	@touch $$@
endef
$(eval $(call tool,buf,$(BUF_VERSION),github.com/bufbuild/buf/cmd/buf))
$(eval $(call tool,protoc-gen-go,$(PROTOC_GEN_GO_VERSION),google.golang.org/protobuf/cmd/protoc-gen-go))
$(eval $(call tool,protoc-gen-go-grpc,$(PROTOC_GEN_GO_GRPC_VERSION),google.golang.org/grpc/cmd/protoc-gen-go-grpc))
$(eval $(call tool,staticcheck,$(STATICCHECK_VERSION),honnef.co/go/tools/cmd/staticcheck))
$(eval $(call tool,grpcurl,$(GRPCURL_VERSION),github.com/fullstorydev/grpcurl/cmd/grpcurl))
$(eval $(call tool,gotestsum,$(GOTESTSUM_VERSION),gotest.tools/gotestsum))

BUF         := $(call TOOL_STAMP,buf,$(BUF_VERSION))
PROTOC_GENS := $(call TOOL_STAMP,protoc-gen-go,$(PROTOC_GEN_GO_VERSION)) $(call TOOL_STAMP,protoc-gen-go-grpc,$(PROTOC_GEN_GO_GRPC_VERSION))
STATICCHECK := $(call TOOL_STAMP,staticcheck,$(STATICCHECK_VERSION))
GRPCURL     := $(call TOOL_STAMP,grpcurl,$(GRPCURL_VERSION))
GOTESTSUM   := $(call TOOL_STAMP,gotestsum,$(GOTESTSUM_VERSION))
# Jaeger's module cannot be go-installed (its go.mod has replace
# directives), so deploy/jaeger is a module of its own that pins it as a
# tool. Building it takes about five minutes; the binary is kept.
JAEGER      := $(BIN_DIR)/jaeger
export ZDM_JAEGER_BIN := $(JAEGER)
# gotestsum runs go test and closes with a count of tests run, skipped and
# failed.
GOTEST      := gotestsum --format pkgname --hide-summary=skipped --

.PHONY: help
help: ## List the targets.
	@grep -hE '^[a-z][a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk -F':.*## ' '{printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

.PHONY: tools
tools: $(BUF) $(PROTOC_GENS) $(STATICCHECK) $(GRPCURL) $(GOTESTSUM) ## Install the pinned tools into .bin/.

.PHONY: build
build: ## Build every binary into bin/.
	go build -ldflags '$(LDFLAGS)' -o bin/zdm ./cmd/zdm

.PHONY: generate
generate: $(BUF) $(PROTOC_GENS) ## Regenerate Go code from proto/.
	buf generate

.PHONY: checkgenerate
checkgenerate: generate ## Fail when the committed generated code is stale.
	@if [ -n "$$(git status --porcelain -- proto)" ]; then \
	  git status --short -- proto; git diff --stat -- proto; \
	  echo "generated code is stale: run 'make generate' and commit the result" >&2; exit 1; \
	fi

.PHONY: lint
lint: $(BUF) $(STATICCHECK) ## buf lint, format and breaking check; gofmt, go vet, staticcheck; every module tidy and building alone.
	buf lint
	buf format --diff --exit-code
	@if git rev-parse --verify -q main >/dev/null; then \
	  echo "buf breaking --against .git#branch=main"; buf breaking --against '.git#branch=main'; \
	fi
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt would change:" $$out >&2; exit 1; fi
	go vet $(PKGS)
	staticcheck $(PKGS)
	@# Each module stands alone: its go.mod lists what it imports, and it
	@# builds without the workspace (another service imports proto alone).
	@for m in $(MODULES); do \
	  (cd $$m && GOWORK=off go mod tidy -diff >/dev/null) || { echo "$$m: go.mod or go.sum is not tidy: run (cd $$m && GOWORK=off go mod tidy)" >&2; exit 1; }; \
	  (cd $$m && GOWORK=off go build ./...) || { echo "$$m does not build on its own (GOWORK=off)" >&2; exit 1; }; \
	done

.PHONY: test
test: testenv-up test-unit test-integration ## Unit, integration and end-to-end tests on real servers (starts the rig).

.PHONY: test-unit
test-unit: $(GOTESTSUM) ## Unit tests only: fast, no server.
	$(GOTEST) -short -race -count=1 $(PKGS)

# The rig script's own tests start a second rig of two standalone servers.
# They run first and on their own: beside the whole suite, on two cores,
# their servers once failed to start within four minutes.
RIG_TESTS := ^TestIntegrationRig(RestartsDeadServer|DownThenUp)$$

.PHONY: test-integration
test-integration: $(GOTESTSUM) $(JAEGER) ## Integration and end-to-end tests (needs the rig: make testenv-up).
	$(WITH_TESTENV) $(GOTEST) -race -count=1 -timeout 10m -run '$(RIG_TESTS)' ./pkg/ztest
	$(WITH_TESTENV) $(GOTEST) -race -count=1 -timeout 25m -run '^Test(Integration|E2E)' -skip '$(RIG_TESTS)' $(PKGS)

.PHONY: bench
bench: ## Benchmarks; each figure is also given as a ratio to its baseline from the same run.
	go test -run '^$$' -bench . -benchmem -count 1 $(PKGS) | tee .bin/bench.txt
	@awk '/^BenchmarkPublishChange\/sync=1s/ {base=$$3} /^BenchmarkPublishChange\/sync=always/ {cur=$$3} \
	  END {if (base > 0) printf "publish_fsync_always_vs_1s_ratio=%.2f\n", cur/base}' .bin/bench.txt

.PHONY: bench-copy
bench-copy: build testenv-up ## Copy benchmark on the primary rig tier: ceiling, zdm's copy, a naive copy, the shared-machine limit (name=value lines).
	$(WITH_TESTENV) go run ./cmd/zdm/tools/benchcopy -zdm bin/zdm $(BENCH_COPY_FLAGS)

.PHONY: bench-copy-scale
bench-copy-scale: build testenv-up ## Copy 100k, 400k and 1.6M rows of 128-dim vectors: rate and copier memory at each size.
	$(WITH_TESTENV) go run ./cmd/zdm/tools/benchcopy -zdm bin/zdm -dim 128 -scale 100000,400000,1600000 $(BENCH_COPY_FLAGS)

.PHONY: bench-cdc
bench-cdc: build testenv-up ## Gateway benchmark on the primary rig tier: added latency, throughput, CPU (name=value lines).
	$(WITH_TESTENV) go run ./cmd/zdm/tools/benchcdc -zdm bin/zdm $(BENCH_CDC_FLAGS)

.PHONY: testenv-up
testenv-up: ## Install and start the real Milvus servers of every tier (idempotent).
	$(TESTENV) up

.PHONY: testenv-down
testenv-down: ## Stop the test rig's servers and delete their data.
	$(TESTENV) down

.PHONY: testenv-status
testenv-status: ## Show the test rig's servers and their memory.
	$(TESTENV) status

$(JAEGER): deploy/jaeger/go.mod deploy/jaeger/go.sum
	cd deploy/jaeger && GOWORK=off go build -o $(JAEGER) github.com/jaegertracing/jaeger/cmd/jaeger

.PHONY: jaeger-bin
jaeger-bin: $(JAEGER) ## Build Jaeger into .bin/ (once; about five minutes).

.PHONY: jaeger
jaeger: $(JAEGER) ## Start Jaeger in the background: spans over OTLP on 127.0.0.1:4317, query API on :16686.
	JAEGER=$(JAEGER) deploy/jaeger/jaeger.sh up

.PHONY: jaeger-down
jaeger-down: ## Stop the Jaeger that make jaeger started (its spans are lost).
	deploy/jaeger/jaeger.sh down

.PHONY: demo
demo: build ## Two local Milvus, 105k rows, a zero-downtime migration to switchover on screen (KEEP=1 leaves it running).
	KEEP=$(KEEP) JAEGER=$(JAEGER) deploy/demo/demo.sh

.PHONY: demo-down
demo-down: ## Stop what make demo KEEP=1 left running.
	deploy/demo/demo.sh down

.PHONY: run
run: build ## Build and run bin/zdm with its defaults (API on 127.0.0.1:7400).
	bin/zdm -log-format text

.PHONY: clean
clean: ## Remove build output (not the rig: see testenv-down).
	rm -rf bin
