# ssegate — make targets. `make test` is the whole suite CI runs.
GO        ?= go
BIN       := $(CURDIR)/.bin
STATICCHECK_VERSION := v0.8.2
# Seconds of fuzzing per target in `make test`; `make fuzz FUZZTIME=60s` for a long run.
FUZZTIME  ?= 3s

# package:FuzzTarget pairs run by `make fuzz`.
FUZZ_TARGETS := \
	./pkg/event:FuzzRoundTrip \
	./pkg/event:FuzzDecode \
	./pkg/protocol:FuzzDecodeLive \
	./pkg/protocol:FuzzParseID \
	./gateway:FuzzParseStreamQuery \
	./gateway:FuzzLengthScanner

# The process-level failure scenarios (test/failure_test.go).
SCENARIOS := TestRollingRestart|TestCrash|TestPubSubCut|TestRedisRestart|TestSlowAndStalledClients|TestChurn

.PHONY: build test unit lint fmt-check vet staticcheck fuzz soak bench bench-compare clean

build:
	$(GO) build -o bin/ ./cmd/...

test: lint unit fuzz deploy-check interop ts

unit:
	$(GO) test -race -count=1 -timeout 10m ./...

lint: fmt-check vet staticcheck

fmt-check:
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck: $(BIN)/staticcheck
	$(BIN)/staticcheck ./...

$(BIN)/staticcheck:
	GOBIN=$(BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg > /tmp/ssegate-fuzz.log 2>&1 || { cat /tmp/ssegate-fuzz.log; exit 1; }; \
	done

# Longer runs of the failure scenarios: 10 rounds, 20,000-connection churn,
# a 10,000-event job under 50 pub/sub kills. About 15 minutes.
soak:
	SSEGATE_SOAK=1 $(GO) test -race -count=10 -timeout 60m -run '^($(SCENARIOS))$$' ./test/

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# BASE against the work tree: the Go benchmarks interleaved COUNT times,
# through benchstat, and with SCENARIO=name a short ssebench scenario
# (see cmd/ssebench/compare.sh), e.g.
#   make bench-compare BASE=main~3 PKGS=./gateway SCENARIO=storm-one
bench-compare:
	@test -n "$(BASE)" || { echo "usage: make bench-compare BASE=<rev> [COUNT=6] [BENCH=.] [PKGS=./...] [SCENARIO=storm-one]"; exit 2; }
	bash cmd/ssebench/compare.sh $(BASE)

# The container image (deploy/Dockerfile), labelled with the version and the
# commit. Needs a Docker engine with BuildKit (Docker 23+); the machine these
# files were written on has none, so this target was not run there.
IMAGE     ?= ssegate:dev
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
.PHONY: image
image:
	@command -v docker >/dev/null 2>&1 || { echo "make image needs docker (an engine with BuildKit); none here"; exit 1; }
	docker build -f deploy/Dockerfile -t $(IMAGE) \
		--build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) \
		--build-arg CREATED=$$(date -u +%Y-%m-%dT%H:%M:%SZ) .

# The deployment checks (deploy/check, a Go module of its own): the Helm
# chart rendered and linted with the Helm SDK, decoded strictly into the
# Kubernetes API types and cross-checked; deploy/k8s against the chart's
# default render; docker-compose.yml. No -race: the Helm SDK is heavy.
.PHONY: deploy-check
deploy-check:
	cd deploy && $(GO) test -count=1 ./...

# The interoperability suite (test/interop, a Go module of its own): SSE
# clients this project did not write (the eventsource and
# @microsoft/fetch-event-source npm packages, tmaxmax/go-sse, r3labs/sse,
# headless Chromium) against the real gateway and redis-server. Needs Node.js
# 20+ with npm; the README's client compatibility table is what it measures.
.PHONY: interop
interop:
	cd test/interop && (cd node && npm ci --no-audit --no-fund) && $(GO) test -count=1 ./...

# The TypeScript package (typescript/): npm ci from its lockfile, strict tsc
# over its sources, tests and examples, and its tests (node --test) against
# a real redis-server and the gateway and ssepub binaries built here.
TSBIN := $(CURDIR)/typescript/build/bin
.PHONY: ts
ts:
	$(GO) build -o $(TSBIN)/ ./cmd/gateway ./cmd/ssepub
	cd typescript && npm ci --no-audit --no-fund && npm run check && npm run build && \
		SSEGATE_GATEWAY_BIN=$(TSBIN)/gateway SSEGATE_SSEPUB_BIN=$(TSBIN)/ssepub npm test

clean:
	rm -rf bin $(BIN) typescript/dist typescript/build
