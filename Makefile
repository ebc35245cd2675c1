# Two commands do everything: `make demo` and `make test`. Both set up what they need, idempotently.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
AIRFLOW3 ?= 3.3.2
AIRFLOW2 ?= 2.11.2
VENV := .venv
VENV2 := .venv-airflow2
VENV_BENCH := .venv-bench
VENV_CELERY := .venv-celery
VENV_BROWSER := .venv-browser
VENV_PY310 := .venv-py310
VENV_PY313 := .venv-py313
# The lowest and the highest Python that Airflow 3.3 supports (Airflow 2.11 stops at 3.12, so these venvs get
# Airflow 3 only). A pyenv shim that cannot run the version is passed over for pyenv's own build of it.
find_python = $(shell for p in "$$(command -v python$(1))" $${PYENV_ROOT:-$$HOME/.pyenv}/versions/$(1).*/bin/python$(1); do \
  [ -n "$$p" ] && "$$p" -c '' >/dev/null 2>&1 && { echo "$$p"; break; }; done)
PYTHON310 ?= $(call find_python,3.10)
PYTHON313 ?= $(call find_python,3.13)
# The fast selection: what `make test` runs on each Airflow and Python.
FAST := not slow and not e2e and not browser
DEMO_HOME := $(CURDIR)/.demo
export UV_PYTHON_DOWNLOADS := never
export NO_PROXY := 127.0.0.1,localhost,::1
COMMA := ,

.PHONY: demo test lint unit-airflow3 unit-airflow2 test-pythons test-py310 test-py313 package-check browser bench soak e2e e2e-celery venvs clean

# A venv is (re)built only when pyproject.toml, the Airflow version or the Python version changed.
# $(1): the venv, $(2): the Airflow version, $(3): the extras, $(4): the Python interpreter.
# Everything is installed into the venv by naming its interpreter; nothing ever goes into the interpreter that
# runs make. uv is installed into the venv itself (pip falls back when it cannot be), so neither uv on PATH nor a
# writable home is needed. The venv is checked (Airflow version, the checkout's package, the dev tools) before it
# is called ready.
define make_venv
	@set -e; py="$(4)"; \
	if [ -z "$$py" ] || ! "$$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then \
	  echo "$(1): needs Python 3.10 or newer; got '$$py' (set $(if $(5),$(5),PYTHON)=/path/to/python3.x)" >&2; exit 1; \
	fi; \
	pyver=$$("$$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	stamp="$(1)/.installed-$(2)-py$$pyver-$$(cat pyproject.toml | sha1sum | cut -c1-12)"; \
	if [ ! -f "$$stamp" ]; then \
	  if [ -x "$(1)/bin/python" ] && [ "$$("$(1)/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" != "$$pyver" ]; then \
	    rm -rf "$(1)"; \
	  fi; \
	  [ -x "$(1)/bin/python" ] || "$$py" -m venv "$(1)"; \
	  "$(1)/bin/python" -m pip install --quiet --disable-pip-version-check "uv>=0.5" >/dev/null 2>&1 || true; \
	  if [ -x "$(1)/bin/uv" ]; then \
	    "$(1)/bin/uv" pip install --quiet --python "$(1)/bin/python" -e ".[$(3)]" "apache-airflow==$(2)"; \
	  else \
	    "$(1)/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[$(3)]" "apache-airflow==$(2)"; \
	  fi; \
	  "$(1)/bin/python" .ci/check_venv.py "$(1)" "$(2)" "$(CURDIR)"; \
	  rm -f "$(1)"/.installed-*; touch "$$stamp"; \
	  echo "$(1): Airflow $(2) on Python $$pyver ready"; \
	fi
endef

$(VENV)/.ready: pyproject.toml
	$(call make_venv,$(VENV),$(AIRFLOW3),dev,$(PYTHON))
	@touch $@

$(VENV2)/.ready: pyproject.toml
	$(call make_venv,$(VENV2),$(AIRFLOW2),dev,$(PYTHON))
	@touch $@

venvs: $(VENV)/.ready $(VENV2)/.ready

lint: $(VENV)/.ready
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

unit-airflow3: $(VENV)/.ready
	$(VENV)/bin/pytest -m "$(FAST)" -p no:cacheprovider

unit-airflow2: $(VENV2)/.ready
	$(VENV2)/bin/pytest -m "$(FAST)" -p no:cacheprovider

## make test: lint, type-check, and run every fast test on Airflow 3.3 and on Airflow 2.11.
test: lint unit-airflow3 unit-airflow2

# $(1): the interpreter, $(2): the X.Y it must be, $(3): the variable that names it.
define require_python
	@py="$(1)"; if [ -z "$$py" ] || ! "$$py" -c 'import sys; sys.exit(sys.version_info[:2] != tuple(map(int, "$(2)".split("."))))' 2>/dev/null; then \
	  echo "No working Python $(2): $(3)='$$py'. Install Python $(2), or run: make $(MAKECMDGOALS) $(3)=/path/to/python$(2)" >&2; \
	  exit 1; \
	fi
endef

$(VENV_PY310)/.ready: pyproject.toml
	$(call require_python,$(PYTHON310),3.10,PYTHON310)
	$(call make_venv,$(VENV_PY310),$(AIRFLOW3),dev,$(PYTHON310),PYTHON310)
	@touch $@

$(VENV_PY313)/.ready: pyproject.toml
	$(call require_python,$(PYTHON313),3.13,PYTHON313)
	$(call make_venv,$(VENV_PY313),$(AIRFLOW3),dev,$(PYTHON313),PYTHON313)
	@touch $@

## make test-pythons: the fast tests on Airflow 3.3 under the lowest and the highest supported Python (3.10,
## 3.13). Airflow 2.11 does not support Python 3.13, so Airflow 2 is tested on $(PYTHON) only (make test).
## Each Python is its own target, so that `make -j2 test-pythons` runs both at once (CI does).
test-pythons: test-py310 test-py313

test-py310: $(VENV_PY310)/.ready
	$(VENV_PY310)/bin/pytest -m "$(FAST)" -p no:cacheprovider -q

test-py313: $(VENV_PY313)/.ready
	$(VENV_PY313)/bin/pytest -m "$(FAST)" -p no:cacheprovider -q

## make package-check: build the sdist and wheel, twine-check them, install the wheel into a clean venv with
## Airflow 3.3 and check what a user gets (provider metadata, hook, console script, wheel contents).
package-check:
	@.ci/package-check "$(PYTHON)" "$(AIRFLOW3)"

$(VENV_BROWSER)/.ready: pyproject.toml
	$(call make_venv,$(VENV_BROWSER),$(AIRFLOW3),dev$(COMMA)browser,$(PYTHON))
	@touch $@

## make browser: the Bitrix24 connection form in a real Airflow 3 UI, driven in Debian's headless Chromium
## (.ci/install-browser installs it). Screenshots land in .artifacts/.
browser: $(VENV_BROWSER)/.ready
	$(VENV_BROWSER)/bin/pytest -m browser tests/browser -p no:cacheprovider

## make demo: start the sandbox portal, run the example DAGs with `airflow dags test`, stop the sandbox.
demo: $(VENV)/.ready
	@$(VENV)/bin/python -m airflow_provider_bitrix24.sandbox.demo --home "$(DEMO_HOME)"

## make e2e: a real Airflow 3 (api-server, scheduler, dag-processor, triggerer) runs the deferrable sensor DAG.
e2e: $(VENV)/.ready
	$(VENV)/bin/pytest -m e2e tests/e2e -p no:cacheprovider

# The Celery deployment needs the Celery and Redis providers and a PostgreSQL driver: a venv of its own.
$(VENV_CELERY)/.ready: pyproject.toml
	$(call make_venv,$(VENV_CELERY),$(AIRFLOW3),dev$(COMMA)celery,$(PYTHON))
	@touch $@

## make e2e-celery: a CeleryExecutor deployment (PostgreSQL, Redis, two workers, two triggerers) on one portal.
## Installs redis-server and postgresql from the Debian packages when missing; the test starts and stops both.
e2e-celery: $(VENV_CELERY)/.ready
	@.ci/install-services
	$(VENV_CELERY)/bin/pytest -m e2e_celery tests/e2e_celery -p no:cacheprovider

## make soak: the long reliability cases (thousands of saves under injected faults).
soak: $(VENV)/.ready
	$(VENV)/bin/pytest -m slow tests/reliability -p no:cacheprovider

# The peers of the benchmarks pin some shared packages; they get a venv of their own.
$(VENV_BENCH)/.ready: pyproject.toml
	$(call make_venv,$(VENV_BENCH),$(AIRFLOW3),dev$(COMMA)bench,$(PYTHON))
	@touch $@

## make bench: benchmarks against the portal's limits and the alternatives; writes benchmarks/RESULTS.md.
bench: $(VENV_BENCH)/.ready
	$(VENV_BENCH)/bin/python benchmarks/run.py

clean:
	rm -rf $(VENV) $(VENV2) $(VENV_BENCH) $(VENV_CELERY) $(VENV_BROWSER) $(VENV_PY310) $(VENV_PY313) .venv-package .venv-package-tools dist \
	  .demo .artifacts .pytest_cache .mypy_cache .ruff_cache
