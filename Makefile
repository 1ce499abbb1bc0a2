# Two commands set everything up: `make run` and `make test`. Each creates .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SPEC ?= mlops/specs/wage_panel.yaml
EPOCHS ?= 40
DATA_DIR ?= data
PROFILE ?= $(or $(MLOPS_PROFILE),local)

export MLOPS_DATA_DIR ?= $(abspath $(DATA_DIR))
export PREFECT_HOME ?= $(MLOPS_DATA_DIR)/prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120
export PREFECT_LOGGING_LEVEL ?= INFO
export GX_ANALYTICS_ENABLED := False
export MLFLOW_ENABLE_ASYNC_LOGGING := false
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false
export DO_NOT_TRACK := true
export PYTHONUNBUFFERED := 1

.PHONY: venv tools monitoring-tools run stop test test-fast bench bench-serving bench-fairshare bench-scale bench-batch bench-governance bench-platform bench-chaos bench-observability gpu-check lint clean up down status provision deploy feast-ui

venv: $(VENV)/.installed
	@mkdir -p $(PREFECT_HOME)

# torch first, pinned, so that pip takes the CPU build on this machine's disk and no
# other torch (a multi-GB CUDA build) is resolved for the project.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

run: venv
	$(PY) -m flows.cli run --spec $(SPEC) --epochs $(EPOCHS)

stop: venv
	$(PY) -m flows.cli stop

# Platform mode: Prefect server, MLflow server, pools/queues/limits, one worker per pool.
up: venv monitoring-tools
	MLOPS_PROFILE=$(PROFILE) $(PY) -m infra.services up

down: venv
	$(PY) -m infra.services down

status: venv
	$(PY) -m infra.services status

provision: venv
	PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:4200/api} $(PY) -m infra.provision

deploy: venv
	$(PY) -m infra.flow_deployments

# Feast's UI (http://127.0.0.1:8888) over one dataset's store, as the features stage
# rendered it under the data directory: make feast-ui DATASET=wage_panel
DATASET ?= wage_panel
feast-ui: venv
	$(VENV)/bin/feast -f $(MLOPS_DATA_DIR)/features/$(DATASET)/feature_store.yaml ui --host 127.0.0.1

# Debian's wrk and h2load (nghttp2-client): bench-serving's REST and gRPC load generators,
# whose quick mode the tests run, and openssl for its throwaway TLS certificate; Debian's
# chromium: the browser of the gateway's UI test (driven by Playwright, never downloaded).
# Installed when missing (through sudo where make does not run as root, as on CI runners).
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
# Debian's Prometheus (with promtool, which the tests run on the rules) and node exporter:
# what `make up` starts for monitoring.
monitoring-tools:
	command -v prometheus >/dev/null && command -v promtool >/dev/null && command -v prometheus-node-exporter >/dev/null || ($(SUDO) apt-get install -y prometheus prometheus-node-exporter || ($(SUDO) apt-get update && $(SUDO) apt-get install -y prometheus prometheus-node-exporter))

tools: monitoring-tools
	command -v wrk >/dev/null || ($(SUDO) apt-get install -y wrk || ($(SUDO) apt-get update && $(SUDO) apt-get install -y wrk))
	command -v h2load >/dev/null || ($(SUDO) apt-get install -y nghttp2-client || ($(SUDO) apt-get update && $(SUDO) apt-get install -y nghttp2-client))
	command -v openssl >/dev/null || ($(SUDO) apt-get install -y openssl || ($(SUDO) apt-get update && $(SUDO) apt-get install -y openssl))
	command -v chromium >/dev/null || ($(SUDO) apt-get install -y chromium || ($(SUDO) apt-get update && $(SUDO) apt-get install -y chromium))

test: venv tools
	$(PY) -m pytest tests --durations=40

test-fast: venv
	$(PY) -m pytest tests -m "not slow"

bench: venv
	$(PY) -m benchmarks.bench_pipeline $(BENCH_ARGS)

# The inference service beside KServe's ModelServer, mlflow models serve and the FastAPI and
# bare ASGI floors (uvicorn, granian), REST (wrk), gRPC (h2load) and TLS, in alternating
# rounds; BENCH_ARGS=--quick for one round of 1 s runs (what the tests run).
bench-serving: venv tools
	$(PY) -m benchmarks.bench_serving $(BENCH_ARGS)

bench-fairshare: venv
	$(PY) -m benchmarks.bench_fairshare $(BENCH_ARGS)

# BENCH_ARGS are bench_scale's; the lookup bench shares only --quick.
bench-scale: venv
	$(PY) -m benchmarks.bench_scale $(BENCH_ARGS)
	$(PY) -m benchmarks.bench_online_lookup $(filter --quick,$(BENCH_ARGS))

# Batch scoring: the Dask scorer vs one pandas + ONNX Runtime process (same datasets as
# bench-scale, cached under data/bench/scale/).
bench-batch: venv
	$(PY) -m benchmarks.bench_batch $(BENCH_ARGS)

# The audit trail: append throughput (local file, the machine's PostgreSQL) and verify.
bench-governance: venv
	$(PY) -m benchmarks.bench_governance $(BENCH_ARGS)

# Platform: submission-to-start latency on an idle pool (20 runs) and throughput at pool
# concurrency 1, 2 and 4, on a real Prefect server and process workers.
bench-platform: venv
	$(PY) -m benchmarks.bench_platform $(BENCH_ARGS)

# Chaos: seeded kills (workers, a lost node, the inference service, the controller) on the
# real stack while teams submit runs and wrk loads the service.
bench-chaos: venv tools
	$(PY) -m benchmarks.bench_chaos $(BENCH_ARGS)

# Observability: the anomaly detectors on a labelled synthetic day, GPU node autoscaling with
# spot in the fair-share simulator against a static pool sized for the peak, and what a real
# Prometheus scraping the service every second costs its throughput (needs wrk, prometheus).
bench-observability: venv tools
	$(PY) -m benchmarks.bench_observability $(BENCH_ARGS)

gpu-check: venv
	$(PY) -m benchmarks.gpu_check $(BENCH_ARGS)

lint: venv
	$(PY) -m ruff check mlops tasks flows feature_repo infra tests benchmarks
	$(VENV)/bin/lint-imports --no-cache --no-logo

clean: stop down
	rm -rf $(MLOPS_DATA_DIR) .pytest_cache .ruff_cache
