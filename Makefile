# mandate — token-exchange broker for AI agents.
GO      ?= go
BIN     ?= bin/mandate
DATA    ?= ./data
LISTEN  ?= 127.0.0.1:8080
PKGS    ?= ./...

.PHONY: run build test lint bench fuzz conformance demo clean

## run: start the broker in dev mode on the embedded SQLite store (data in ./data)
run: build
	$(BIN) serve --dev --listen $(LISTEN) --data $(DATA)

## build: compile the mandate binary into bin/
build:
	$(GO) build -o $(BIN) ./cmd/mandate

## test: vet and run every test (PostgreSQL half when MANDATE_TEST_DATABASE_URL is set)
test:
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout 12m $(PKGS)

## lint: gofmt and go vet
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

## bench: the hot-path benchmarks, benchstat-readable
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./broker/... ./policies/... ./internal/app/ | tee bench.out

clean:
	rm -rf bin bench.out

## conformance: run the conformance suite (docs/conformance.md). Against any server:
##   make conformance CONFORMANCE_CONFIG=target.yaml
## Against a running mandate whose upstream_issuers trusts http://$(IDP_ADDR), with
## MANDATE_ADMIN_KEY set (the suite registers its own clients and grants):
##   make conformance ISSUER=http://127.0.0.1:8080
CONFORMANCE_CONFIG ?=
ISSUER   ?= http://$(LISTEN)
IDP_ADDR ?= 127.0.0.1:9999
conformance:
ifneq ($(CONFORMANCE_CONFIG),)
	$(GO) run ./cmd/mandate conformance --config $(CONFORMANCE_CONFIG)
else
	$(GO) run ./cmd/mandate conformance --mandate-url $(ISSUER) --idp-addr $(IDP_ADDR)
endif

## demo: the whole delegation story end to end, in-process on loopback (examples/demo)
demo:
	$(GO) run ./examples/demo

## fuzz: run every fuzz target for FUZZTIME each (seed corpora are checked in under testdata/fuzz)
FUZZTIME ?= 10s
fuzz:
	@for spec in \
	  ./broker:FuzzParseOwnToken ./broker:FuzzParseExchangeParams \
	  ./broker/edge:FuzzValidate ./broker/edge:FuzzParseJSONObject \
	  ./broker/clients:FuzzValidate ./broker/clients:FuzzValidID ./broker/keys:FuzzDERToFixed \
	  ./policies:FuzzCompile ./policies/decisionlog:FuzzRedactString \
	  ./server:FuzzClientAdminBodies ./server:FuzzGrantsAPIBodies ./server:FuzzPoliciesAPIEval; do \
	  pkg=$${spec%%:*}; fn=$${spec##*:}; echo "== $$pkg $$fn"; \
	  $(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	done
