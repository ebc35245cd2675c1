# Two commands do everything: `make demo` and `make test`. Both set up what they need, idempotently.
SHELL := /bin/bash
# The interpreter to prefer; each venv takes it when its version fits, else another one that does (.ci/find-python).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
AIRFLOW3 ?= 3.3.2
AIRFLOW2 ?= 2.11.2
VENV := .venv
VENV2 := .venv-airflow2
VENV_LOWEST := .venv-lowest
VENV_BENCH := .venv-bench
VENV_CELERY := .venv-celery
VENV_BROWSER := .venv-browser
VENV_PY310 := .venv-py310
VENV_PY313 := .venv-py313
# Every venv installs exactly one lock of locks/ (make lock writes them; see README, "Locked environments").
LOCK3 := locks/airflow-$(AIRFLOW3).txt
LOCK2 := locks/airflow-$(AIRFLOW2).txt
LOCK_LOWEST := locks/lowest-direct.txt
TOOL_LOCKS := locks/uv.txt locks/build.txt
AIRFLOW_LOWEST = $(shell sed -n 's/^apache-airflow==\([0-9.]*\).*/\1/p' $(LOCK_LOWEST))
PYTHON310 ?=
PYTHON313 ?=
# The fast selection: what `make test` runs on each Airflow and Python.
FAST := not slow and not e2e and not browser
DEMO_HOME := $(CURDIR)/.demo
export UV_PYTHON_DOWNLOADS := never
export NO_PROXY := 127.0.0.1,localhost,::1

.PHONY: demo test lint unit-airflow3 unit-airflow2 test-lowest test-pythons test-py310 test-py313 package-check browser bench soak e2e e2e-celery venvs lock clean

# A venv is (re)built, exactly as its lock says, when the lock, the tool locks, pyproject.toml or the interpreter
# changed (.ci/make-venv keeps a stamp of them). Python: the first of $(PYTHON), python3.11, python3, ... whose
# version lies in the range the venv's Airflow supports (.ci/find-python says what to install when none does).
# Nothing is ever installed into the interpreter that runs make; uv comes from locks/uv.txt into each venv.
# $(1): the venv, $(2): its lock, $(3)-$(4): the Python range, $(5): the preferred interpreter, $(6): Airflow.
define make_venv
	@py=$$(.ci/find-python $(3) $(4) "$(5)") && .ci/make-venv $(1) $(2) "$$py" $(6)
	@touch $(1)/.ready
endef

$(VENV)/.ready: pyproject.toml $(LOCK3) $(TOOL_LOCKS)
	$(call make_venv,$(VENV),$(LOCK3),3.10,3.13,$(PYTHON),$(AIRFLOW3))

# Airflow 2.11 supports Python 3.10 to 3.12.
$(VENV2)/.ready: pyproject.toml $(LOCK2) $(TOOL_LOCKS)
	$(call make_venv,$(VENV2),$(LOCK2),3.10,3.12,$(PYTHON),$(AIRFLOW2))

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

## make lock: re-resolve every lock of locks/ against the newest releases and print what changed; then run the
## tests and commit. `make lock UPGRADE=no` keeps the pins that still fit (after editing pyproject.toml).
lock: $(VENV)/.ready
	@[ -x $(VENV)/bin/uv ] || { echo "make lock needs uv in $(VENV) (it comes from locks/uv.txt)" >&2; exit 1; }
	@.ci/lock $(VENV)/bin/uv $(VENV)/bin/python $(AIRFLOW3) $(AIRFLOW2)

## make test-lowest: the fast tests with every direct dependency of the package at the lowest version
## pyproject.toml allows (Airflow 2.11.0 included): the declared lower bounds are true.
$(VENV_LOWEST)/.ready: pyproject.toml $(LOCK_LOWEST) $(TOOL_LOCKS)
	$(call make_venv,$(VENV_LOWEST),$(LOCK_LOWEST),3.10,3.12,$(PYTHON),$(AIRFLOW_LOWEST))

test-lowest: $(VENV_LOWEST)/.ready
	$(VENV_LOWEST)/bin/pytest -m "$(FAST)" -p no:cacheprovider -q

$(VENV_PY310)/.ready: pyproject.toml $(LOCK3) $(TOOL_LOCKS)
	$(call make_venv,$(VENV_PY310),$(LOCK3),3.10,3.10,$(PYTHON310),$(AIRFLOW3))

$(VENV_PY313)/.ready: pyproject.toml $(LOCK3) $(TOOL_LOCKS)
	$(call make_venv,$(VENV_PY313),$(LOCK3),3.13,3.13,$(PYTHON313),$(AIRFLOW3))

## make test-pythons: the fast tests on Airflow 3.3 under the lowest and the highest supported Python (3.10,
## 3.13), from the same lock as .venv. Airflow 2.11 does not support Python 3.13, so Airflow 2 is tested on one
## Python only (make test). PYTHON310/PYTHON313 name the interpreters when they are not found by themselves.
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

$(VENV_BROWSER)/.ready: pyproject.toml locks/airflow-$(AIRFLOW3)-browser.txt $(TOOL_LOCKS)
	$(call make_venv,$(VENV_BROWSER),locks/airflow-$(AIRFLOW3)-browser.txt,3.10,3.13,$(PYTHON),$(AIRFLOW3))

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

# The Celery deployment needs the Celery and Redis providers and a PostgreSQL driver: a venv (and a lock) of its own.
$(VENV_CELERY)/.ready: pyproject.toml locks/airflow-$(AIRFLOW3)-celery.txt $(TOOL_LOCKS)
	$(call make_venv,$(VENV_CELERY),locks/airflow-$(AIRFLOW3)-celery.txt,3.10,3.13,$(PYTHON),$(AIRFLOW3))

## make e2e-celery: a CeleryExecutor deployment (PostgreSQL, Redis, two workers, two triggerers) on one portal.
## Installs redis-server and postgresql from the Debian packages when missing; the test starts and stops both.
e2e-celery: $(VENV_CELERY)/.ready
	@.ci/install-services
	$(VENV_CELERY)/bin/pytest -m e2e_celery tests/e2e_celery -p no:cacheprovider

## make soak: the long reliability cases (thousands of saves under injected faults).
soak: $(VENV)/.ready
	$(VENV)/bin/pytest -m slow tests/reliability -p no:cacheprovider

# The peers of the benchmarks pin some shared packages; they get a venv (and a lock) of their own.
$(VENV_BENCH)/.ready: pyproject.toml locks/airflow-$(AIRFLOW3)-bench.txt $(TOOL_LOCKS)
	$(call make_venv,$(VENV_BENCH),locks/airflow-$(AIRFLOW3)-bench.txt,3.10,3.13,$(PYTHON),$(AIRFLOW3))

## make bench: benchmarks against the portal's limits and the alternatives; writes benchmarks/RESULTS.md.
bench: $(VENV_BENCH)/.ready
	$(VENV_BENCH)/bin/python benchmarks/run.py

clean:
	rm -rf $(VENV) $(VENV2) $(VENV_LOWEST) $(VENV_BENCH) $(VENV_CELERY) $(VENV_BROWSER) $(VENV_PY310) $(VENV_PY313) .venv-package .venv-package-tools dist \
	  .demo .artifacts .pytest_cache .mypy_cache .ruff_cache
