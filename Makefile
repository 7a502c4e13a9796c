# Everything a fresh machine needs goes through these targets; `make demo` and `make test` are the two entry points.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
STAMP := $(VENV)/.installed

.PHONY: install demo test unit integration ui-deps up down status proto openapi openapi-check lint typecheck imports check clean

install: $(STAMP)

# clients/python (the API's bindings and typed client, a distribution of its own) is named beside the project
# so that any installer finds it there; uv would also take it from [tool.uv.sources].
$(STAMP): pyproject.toml clients/python/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(BIN)/pip install --quiet uv==0.9.30
	$(UV) pip install --python $(BIN)/python --compile-bytecode -e clients/python -e '.[dev]'
	# Triton's Python backend runs model.py in its own environment (NumPy 1.x): see deploy/triton.py.
	$(BIN)/python -c "from deploy.triton import ensure_server_env; ensure_server_env()"
	@touch $(STAMP)

demo: install
	$(BIN)/llmrec demo

test: install ui-deps
	$(BIN)/pytest tests

unit: install
	$(BIN)/pytest tests/unit

integration: install ui-deps
	$(BIN)/pytest tests/integration

# The admin page's browser test (tests/integration/test_admin_ui.py) drives Debian's Chromium through
# Playwright (a dev dependency); `playwright install` is never used (it downloads a browser of its own).
# Installs the package only when /usr/bin/chromium is missing (apt-get update first: a clean machine has
# no package lists).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
ui-deps:
	@if [ -x $(CHROMIUM) ]; then echo "$(CHROMIUM) is installed"; else \
		$(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y chromium; fi

up: install
	$(BIN)/llmrec up

down:
	@if [ -x $(BIN)/llmrec ]; then $(BIN)/llmrec down; fi

status: install
	$(BIN)/llmrec status

# Into clients/python/src/llmrec_client/v1/ (grpc_api/codegen.py); `make check` runs the staleness test.
proto: install
	$(BIN)/python -m grpc_api.codegen

# The HTTP/JSON API's OpenAPI document, generated from grpc_api/http_api.py (the one source); committed.
OPENAPI := proto/openapi/llmrec.v1.json
openapi: install
	$(BIN)/python -m grpc_api.http_api --write-openapi $(OPENAPI)

openapi-check: install
	$(BIN)/python -m grpc_api.http_api --check $(OPENAPI)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy .

# The import contracts of pyproject.toml ([tool.importlinter]) and the layer picture drawn from them.
imports: install
	$(BIN)/lint-imports
	$(BIN)/python -m tools.architecture_diagram --check

# Everything CI gates on before the tests: lint, format, strict types, import layers, a fresh OpenAPI file.
check: lint typecheck imports openapi-check

clean: down
	rm -rf .llmrec artifacts

.PHONY: bench bench-quick
bench: install
	$(BIN)/python -m bench --out reports/bench.json

bench-quick: install
	$(BIN)/python -m bench --quick --skip-catalogue --out reports/bench.json

# Operations as code (deploy/observability, deploy/helm/llmrec): helm, promtool and buf built from the Go
# module proxy into .tools/ (tools/install_ops_tools.sh: minutes the first time, cached after; OPS_TOOLS_DIR
# moves the cache), then the proto's compatibility (proto-compat, below), lint and render the chart (defaults
# and ci-values.yaml), check the renders, the scrape configs, the alert rules (with their unit tests) and the
# dashboard's metric names.
OPS_TOOLS_DIR ?= .tools
OPS_BIN := $(OPS_TOOLS_DIR)/bin
CHART := deploy/helm/llmrec
PROM := deploy/observability/prometheus
.PHONY: ops-check
ops-check: install proto-compat
	OPS_TOOLS_DIR=$(abspath $(OPS_TOOLS_DIR)) tools/install_ops_tools.sh
	$(OPS_BIN)/helm lint --strict $(CHART)
	$(OPS_BIN)/helm lint --strict $(CHART) -f $(CHART)/ci-values.yaml
	@mkdir -p $(OPS_TOOLS_DIR)/rendered
	$(OPS_BIN)/helm template llmrec $(CHART) > $(OPS_TOOLS_DIR)/rendered/default.yaml
	$(OPS_BIN)/helm template llmrec $(CHART) -f $(CHART)/ci-values.yaml > $(OPS_TOOLS_DIR)/rendered/ci.yaml
	$(BIN)/python -m tools.check_chart $(OPS_TOOLS_DIR)/rendered/default.yaml $(OPS_TOOLS_DIR)/rendered/ci.yaml
	$(OPS_BIN)/promtool check config $(PROM)/prometheus.yml $(PROM)/prometheus-kubernetes.yml
	$(OPS_BIN)/promtool test rules $(PROM)/alerts_test.yml
	$(BIN)/python -m tools.ops_assets

# Proto compatibility (proto/buf.yaml): `buf lint`, and `buf breaking` (FILE rules) of proto/ against the image
# of the last release, committed in proto/compat/. At a release, `make proto-release` rewrites that image from
# the proto being released (commit it with the release); until the next one, a change that would break its
# clients fails here.
BUF := $(OPS_BIN)/buf
PROTO_RELEASE := proto/compat/llmrec-v1.binpb
.PHONY: buf proto-compat proto-release
buf:
	OPS_TOOLS_DIR=$(abspath $(OPS_TOOLS_DIR)) tools/install_ops_tools.sh buf

proto-compat: buf
	$(BUF) lint proto
	$(BUF) breaking proto --against $(PROTO_RELEASE)

proto-release: buf
	$(BUF) build proto --exclude-source-info -o $(PROTO_RELEASE)
