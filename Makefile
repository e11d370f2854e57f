# saga-machine: build, test and run. `make help` lists the targets.
#
# make test starts the real services first (scripts/up.sh: PostgreSQL on
# 127.0.0.1:55432, Apache Kafka on 127.0.0.1:59092 with SASL/SCRAM and ACLs;
# scripts/stack.sh: the full stack behind nginx on 127.0.0.1:58080) and
# leaves them running; `make stack-down` and `make down` stop them.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

GO          ?= go
PKGS        ?= ./...
TEST_TIMEOUT ?= 20m
# Short fuzz smoke of every fuzz target, run by `make test` (scripts/fuzz.sh);
# `make fuzz` runs each longer.
FUZZ_SMOKE  ?= 5s
FUZZTIME    ?= 2m

# Addresses of the services started by scripts/up.sh (also internal/testenv's defaults).
export SAGA_TEST_POSTGRES_URL  ?= postgres://postgres@127.0.0.1:55432/postgres?sslmode=disable
export SAGA_TEST_KAFKA_BROKERS ?= 127.0.0.1:59092
# Its SASL_SSL listener and the test CA that signs its certificate (scripts/devcert).
export SAGA_TEST_KAFKA_TLS_BROKERS ?= 127.0.0.1:59094
# The test broker's super user (SASL/SCRAM-SHA-512; loopback-only test values).
export SAGA_TEST_KAFKA_USER ?= admin
export SAGA_TEST_KAFKA_PASSWORD ?= saga-test-admin
# go test -race needs cgo.
export CGO_ENABLED := 1

.PHONY: help build test fuzz-smoke lint run up down clean-services stack stack-down bench bench-e2e fuzz cc images

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

build: ## compile everything
	$(GO) build $(PKGS)

# One recipe, in order (safe under make -j): services, tests, fuzz smoke.
test: cc ## start PostgreSQL, Kafka and the full stack, run all tests with -race, then a short fuzz smoke
	@scripts/test-setup.sh
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)
	@$(MAKE) --no-print-directory fuzz-smoke

# Every fuzz target for FUZZ_SMOKE each (scripts/fuzz.sh fails if there is none).
fuzz-smoke:
	@GO='$(GO)' scripts/fuzz.sh $(FUZZ_SMOKE)

lint: ## gofmt must list nothing; go vet
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [[ -n "$$out" ]]; then echo "gofmt -l lists files to format:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# The whole system in one process on a bare machine (SQLite under
# ./.saga-machine, embedded Kafka, in-process OIDC issuer), a demo user with
# two orders, then serve until Ctrl-C. RUN_ARGS passes flags to cmd/dev,
# e.g. make run RUN_ARGS='--postgres postgres://postgres@127.0.0.1:55432/postgres?sslmode=disable'
RUN_ARGS ?=
run: ## run the whole system in one process (saga-machine API + console on http://127.0.0.1:8080) with a demo
	$(GO) run ./cmd/dev $(RUN_ARGS)

# One OCI image per command (cmd/*): FROM scratch, a static binary, user
# 65532, reproducible (same sources, Go and SOURCE_DATE_EPOCH -> same
# digests), built without a container daemon into IMAGES_DIR (gitignored):
# oci/ (OCI layout), tar/<cmd>.tar (docker-archives), digests.txt.
# IMAGES_ARGS adds scripts/images flags (e.g. -arch arm64, or command names).
IMAGES_DIR  ?= dist/images
IMAGES_ARGS ?=
images: ## build the OCI image of every cmd/ into dist/images (no Docker needed) and print the digests
	$(GO) run ./scripts/images -out '$(IMAGES_DIR)' $(IMAGES_ARGS)

up: ## start PostgreSQL and Kafka for tests (idempotent; installs/fetches what is missing)
	@scripts/up.sh

down: ## stop PostgreSQL and Kafka, keep their data
	@scripts/down.sh

clean-services: ## stop PostgreSQL and Kafka and delete their data
	@scripts/clean-services.sh

# The seed's front door on loopback: nginx (routes generated from
# k8s/ingress.yaml) on http://127.0.0.1:58080, Keycloak under /auth,
# oauth2-proxy, and the four services as separate processes on make up's
# PostgreSQL and Kafka (scripts/stack.sh; downloads cached in $SAGA_RUN_DIR).
stack: ## start the full stack behind nginx + oauth2-proxy + Keycloak (idempotent; make up first)
	@scripts/up.sh
	@scripts/stack.sh

stack-down: ## stop the full stack (keeps its data and downloads; make up's services keep running)
	@scripts/stack-down.sh

bench: ## run all benchmarks once (they report their own metrics)
	@scripts/up.sh
	$(GO) test -run='^$$' -bench=. -benchmem -timeout $(TEST_TIMEOUT) $(PKGS)

# End-to-end throughput: N MANUAL_CREATE_ORDER sagas through the deals API
# with C clients, first on SQLite + the embedded broker, then on PostgreSQL
# + Kafka (scripts/up.sh). BENCH_ARGS adds cmd/bench flags (e.g. --json).
BENCH_N ?= 5000
BENCH_C ?= 200
BENCH_ARGS ?=
# cmd/bench reads the Kafka credentials from the environment (not argv).
BENCH_KAFKA_ENV = SAGA_KAFKA_USER='$(SAGA_TEST_KAFKA_USER)' SAGA_KAFKA_PASSWORD='$(SAGA_TEST_KAFKA_PASSWORD)'
bench-e2e: ## end-to-end saga throughput and latency (cmd/bench) on SQLite+embedded, then PostgreSQL+Kafka
	$(GO) build -o .saga-machine/bench ./cmd/bench
	.saga-machine/bench -n $(BENCH_N) -c $(BENCH_C) $(BENCH_ARGS)
	@scripts/up.sh
	$(BENCH_KAFKA_ENV) .saga-machine/bench -n $(BENCH_N) -c $(BENCH_C) --postgres '$(SAGA_TEST_POSTGRES_URL)' --brokers '$(SAGA_TEST_KAFKA_BROKERS)' $(BENCH_ARGS)

# Open loop on PostgreSQL + Kafka: BENCH_RATE sagas/s offered for
# BENCH_DURATION, latency from each saga's scheduled start (cmd/bench --rate).
BENCH_RATE ?= 500
BENCH_DURATION ?= 30s
.PHONY: bench-open bench-compare
bench-open: ## open-loop saga latency at BENCH_RATE sagas/s (cmd/bench --rate) on PostgreSQL+Kafka
	@scripts/up.sh
	$(GO) build -o .saga-machine/bench ./cmd/bench
	$(BENCH_KAFKA_ENV) .saga-machine/bench --rate $(BENCH_RATE) --duration $(BENCH_DURATION) --postgres '$(SAGA_TEST_POSTGRES_URL)' --brokers '$(SAGA_TEST_KAFKA_BROKERS)' $(BENCH_ARGS)

# The saga bench beside the floors it stands on, in one run on make up's
# services at the same client count: pgbench's write-only transaction on the
# same PostgreSQL, plain produce->consume round trips on the same broker
# (scripts/bench-compare.sh; installs pgbench with apt if it is missing).
# BENCH_KAFKA_TLS=1 (or SAGA_KAFKA_TLS / SAGA_KAFKA_TLS_CA_FILE in the
# environment) runs both the sagas and the round trips over make up's TLS listener.
BENCH_COMPARE_C ?= 32
BENCH_ROUNDS ?= 1
BENCH_KAFKA_TLS ?=
bench-compare: ## sagas/s beside pgbench -N and Kafka round trips at BENCH_COMPARE_C clients, and their ratios
	@BENCH_N='$(BENCH_N)' BENCH_C='$(BENCH_COMPARE_C)' BENCH_ROUNDS='$(BENCH_ROUNDS)' BENCH_ARGS='$(BENCH_ARGS)' BENCH_KAFKA_TLS='$(BENCH_KAFKA_TLS)' GO='$(GO)' scripts/bench-compare.sh

fuzz: ## run every fuzz target for FUZZTIME each (default 2m; scripts/fuzz.sh)
	@GO='$(GO)' scripts/fuzz.sh $(FUZZTIME)

# schemathesis against the four services of a running system, as a user and
# as an operator (internal/contractfuzz), longer than make test's run:
# CONTRACT_EXAMPLES per operation, a seed of the day (CONTRACT_SEED).
CONTRACT_EXAMPLES ?= 100
CONTRACT_SEED ?= $(shell date +%Y%m%d)
.PHONY: contract-fuzz
contract-fuzz: ## schemathesis against all four OpenAPI specs on a running system (CONTRACT_EXAMPLES per operation)
	@scripts/up.sh
	@scripts/schemathesis.sh
	SAGA_CONTRACT_EXAMPLES='$(CONTRACT_EXAMPLES)' SAGA_CONTRACT_SEED='$(CONTRACT_SEED)' $(GO) test -count=1 -v -timeout 120m -run '^TestContract$$' ./internal/contractfuzz

# The chaos run (cmd/chaos, internal/chaos): the four services as processes
# on a private PostgreSQL and Kafka (own ports and data, never make up's),
# kill -9s, a broker and a PostgreSQL restart, a SIGSTOP past the session
# timeout, then checks from the databases. make test runs the short one
# (TestChaosShort); CHAOS_ARGS passes flags, e.g. CHAOS_ARGS='-seed 7 -keep'.
CHAOS_N ?= 10000
CHAOS_ARGS ?=
.PHONY: chaos chaos-short
chaos: ## chaos run: CHAOS_N (10,000) sagas at 40/s, kill -9 about every 10 s, broker and PostgreSQL restarts, a SIGSTOP
	$(GO) run ./cmd/chaos -sagas $(CHAOS_N) -v $(CHAOS_ARGS)
chaos-short: ## chaos run as make test runs it: 1,000 sagas at 8/s, each kind of fault once
	$(GO) run ./cmd/chaos -short -v $(CHAOS_ARGS)

# The race detector needs a C compiler; install one with apt if it is missing.
cc:
	@command -v "$$($(GO) env CC)" >/dev/null || { \
		echo "==> no C compiler for go test -race: installing gcc with apt"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q gcc libc6-dev >/dev/null; }
