# Two commands do everything: `make demo` and `make test`. Both set up what they need, idempotently.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
AIRFLOW3 ?= 3.3.2
AIRFLOW2 ?= 2.11.2
VENV := .venv
VENV2 := .venv-airflow2
VENV_BENCH := .venv-bench
DEMO_HOME := $(CURDIR)/.demo
export UV_PYTHON_DOWNLOADS := never
export NO_PROXY := 127.0.0.1,localhost,::1
COMMA := ,

.PHONY: demo test lint unit-airflow3 unit-airflow2 bench soak e2e venvs clean

# A venv is (re)built only when pyproject.toml or the Airflow version changed. $(3): the extras to install.
define make_venv
	@set -e; stamp="$(1)/.installed-$(2)-$$(sha1sum pyproject.toml | cut -c1-12)"; \
	if [ ! -f "$$stamp" ]; then \
	  command -v uv >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --user uv || $(PYTHON) -m pip install --quiet uv; \
	  UV=$$(command -v uv || echo "$(PYTHON) -m uv"); \
	  [ -x "$(1)/bin/python" ] || $$UV venv --quiet --python "$(PYTHON)" "$(1)"; \
	  VIRTUAL_ENV="$(1)" $$UV pip install --quiet -e ".[$(3)]" "apache-airflow==$(2)"; \
	  rm -f "$(1)"/.installed-*; touch "$$stamp"; \
	  echo "$(1): Airflow $(2) ready"; \
	fi
endef

$(VENV)/.ready: pyproject.toml
	$(call make_venv,$(VENV),$(AIRFLOW3),dev)
	@touch $@

$(VENV2)/.ready: pyproject.toml
	$(call make_venv,$(VENV2),$(AIRFLOW2),dev)
	@touch $@

venvs: $(VENV)/.ready $(VENV2)/.ready

lint: $(VENV)/.ready
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

unit-airflow3: $(VENV)/.ready
	$(VENV)/bin/pytest -m "not slow and not e2e" -p no:cacheprovider

unit-airflow2: $(VENV2)/.ready
	$(VENV2)/bin/pytest -m "not slow and not e2e" -p no:cacheprovider

## make test: lint, type-check, and run every fast test on Airflow 3.3 and on Airflow 2.11.
test: lint unit-airflow3 unit-airflow2

## make demo: start the sandbox portal, run the example DAGs with `airflow dags test`, stop the sandbox.
demo: $(VENV)/.ready
	@$(VENV)/bin/python -m airflow_provider_bitrix24.sandbox.demo --home "$(DEMO_HOME)"

## make e2e: a real Airflow 3 (api-server, scheduler, dag-processor, triggerer) runs the deferrable sensor DAG.
e2e: $(VENV)/.ready
	$(VENV)/bin/pytest -m e2e tests/e2e -p no:cacheprovider

## make soak: the long reliability cases (thousands of saves under injected faults).
soak: $(VENV)/.ready
	$(VENV)/bin/pytest -m slow tests/reliability -p no:cacheprovider

# The peers of the benchmarks pin some shared packages; they get a venv of their own.
$(VENV_BENCH)/.ready: pyproject.toml
	$(call make_venv,$(VENV_BENCH),$(AIRFLOW3),dev$(COMMA)bench)
	@touch $@

## make bench: benchmarks against the portal's limits and the alternatives; writes benchmarks/RESULTS.md.
bench: $(VENV_BENCH)/.ready
	$(VENV_BENCH)/bin/python benchmarks/run.py

clean:
	rm -rf $(VENV) $(VENV2) $(VENV_BENCH) .demo .pytest_cache .mypy_cache .ruff_cache
