# Two commands on a fresh machine: `make demo` and `make test`.
# Each bootstraps what it needs: a virtualenv with the pinned Python packages,
# and the npm toolchain (anvil, solc) from package-lock.json.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP_PY  := $(VENV)/.installed
STAMP_NPM := node_modules/.installed

.PHONY: demo test test-unit test-integration test-faults soak lint format bench up down status compile clean bootstrap browser postgres webapp test-cluster bench-scale

bootstrap: $(STAMP_PY) $(STAMP_NPM)

# The browser tests (tests/browser) drive Debian's Chromium; install it once if it is missing.
browser:
	@test -x /usr/bin/chromium || { echo "installing Debian's chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || { echo "cannot install chromium: run 'sudo apt-get install chromium'"; exit 1; }

# The SQL stores' tests (tests/integration/test_postgres_stores.py) start a PostgreSQL server of
# their own from Debian's binaries (/usr/lib/postgresql/<version>/bin); install them if missing,
# without the system cluster Debian would otherwise create and leave running on port 5432.
postgres:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null || { \
	  echo "installing Debian's postgresql for the SQL stores' tests (no system cluster)"; \
	  mkdir -p /etc/postgresql-common && \
	  { test -e /etc/postgresql-common/createcluster.conf || \
	    echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf; } && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    -o Dpkg::Options::=--force-confold postgresql >/dev/null; } \
	  || { echo "cannot install PostgreSQL: run 'sudo apt-get install postgresql'"; exit 1; }

$(STAMP_PY): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

# `npm ci` refuses a lock file whose optional per-platform anvil builds could not all be
# resolved from the registry mirror; `npm install` installs the same pinned versions from it.
$(STAMP_NPM): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=silent || npm install --no-audit --no-fund --no-save --loglevel=error
	@test -d node_modules/solc && test -d node_modules/@foundry-rs/anvil && test -d node_modules/esbuild && test -d node_modules/jsqr
	@touch $@

demo: bootstrap
	$(BIN)/shardline demo

test: bootstrap browser postgres
	$(BIN)/ruff check shardline tests bench
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-unit: bootstrap
	$(BIN)/python -m pytest -q tests/unit

test-integration: bootstrap browser postgres
	$(BIN)/python -m pytest -q tests/integration tests/e2e tests/browser

# Faults under load: the kill -9 tests, then the fault table (restarts of nats-server and
# redis-server, an anvil reorg, each worker kind killed); `make soak` is the fixed-rate soak.
test-faults: bootstrap
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/faults
	$(BIN)/python bench/faults.py

soak: bootstrap
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

# Hosts in network namespaces on this machine: a 3-node NATS cluster, 4 org nodes, the gateway;
# then one NATS server and one org node are cut off. Needs root (ip netns); not part of `make test`.
test-cluster: bootstrap
	SHARDLINE_CLUSTER_TEST=1 $(BIN)/python -m pytest -q -s -p no:cacheprovider tests/cluster

lint: bootstrap
	$(BIN)/ruff check shardline tests bench
	$(BIN)/ruff format --check shardline tests bench

format: bootstrap
	$(BIN)/ruff format shardline tests bench
	$(BIN)/ruff check --fix shardline tests bench

bench: bootstrap
	$(BIN)/python bench/lookup.py

# Scale-out figures: combiners side by side, a chain with a block time, and how a lookup's cost
# moves with orgs, load and registered transports; then the plots of docs/capacity.md.
bench-scale: bootstrap
	$(BIN)/python bench/combiners.py
	$(BIN)/python bench/block_time.py
	$(BIN)/python bench/capacity.py
	$(BIN)/python bench/plots.py

up: bootstrap
	$(BIN)/shardline up

down:
	$(BIN)/shardline down

status:
	$(BIN)/shardline status

compile: $(STAMP_NPM)
	node shardline/contracts/compile.mjs

# The responders' web app: shardline/webapp/src -> shardline/webapp/static (committed).
webapp: $(STAMP_NPM)
	npm run --silent build:webapp

clean:
	-$(BIN)/shardline down
	rm -rf .shardline
