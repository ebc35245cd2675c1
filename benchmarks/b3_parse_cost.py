"""
B3: how much parsing one of the provider's example DAGs costs, against a DAG of core operators only.

Each measurement is a fresh interpreter that loads one DAG file the way the DAG processor does (execute the
module), timing wall and CPU from before the file's first import (so ``import airflow`` is included, as it is for
a fresh parsing process) to the end of the module. Files are measured in interleaved rounds, so machine drift hits
all alike; the figure is the ratio of medians, example over baseline. A separate run under ``python -X
importtime`` per example DAG gives the import time of the provider's own modules.

Runs for every Airflow virtualenv found (``.venv``: Airflow 3, ``.venv-airflow2``: Airflow 2).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
from pathlib import Path
from typing import Any

from benchmarks.common import BENCH_DIR, ROOT, log, summary

BASELINE = BENCH_DIR / "dags" / "bench_core_operators.py"
EXAMPLES = sorted((ROOT / "example_dags").glob("example_*.py"))
VENVS = {"Airflow 3": ROOT / ".venv", "Airflow 2": ROOT / ".venv-airflow2"}

# Runs under ``python -c``: nothing but the clock is imported before the DAG file.
_CHILD = """
import sys, time
wall, cpu = time.perf_counter(), time.process_time()
import importlib.util
spec = importlib.util.spec_from_file_location("bench_parsed_dag", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["bench_parsed_dag"] = module
spec.loader.exec_module(module)
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
dags = sum(1 for v in vars(module).values() if type(v).__name__ == "DAG")
print("PARSED", wall, cpu, dags, flush=True)
"""
_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"})
    return env


def _parse_once(python: Path, path: Path, env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run(
        [str(python), "-c", _CHILD, str(path)], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("PARSED ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"parsing {path.name} with {python} failed:\n{out.stderr[-2000:]}")
    _, wall, cpu, dags = line.split()
    if int(dags) < 1:
        raise RuntimeError(f"{path.name} defined no DAG")
    return {"wall_s": float(wall), "cpu_s": float(cpu)}


def _own_import_ms(python: Path, path: Path, env: dict[str, str]) -> dict[str, float]:
    """Self time of the provider's modules, and the cumulative time of the whole file, from ``-X importtime``."""
    code = f"import runpy; runpy.run_path({str(path)!r})"
    out = subprocess.run(
        [str(python), "-X", "importtime", "-c", code], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    own = total = 0
    for match in _IMPORT_LINE.finditer(out.stderr):
        self_us, cumulative_us, indent, name = match.groups()
        if name.startswith("airflow_provider_bitrix24"):
            own += int(self_us)
        if len(indent) == 1:  # a top-level import of the DAG file
            total += int(cumulative_us)
    return {"own_ms": own / 1000, "all_imports_ms": total / 1000}


def bench(home: Path, *, quick: bool) -> dict[str, Any]:
    rounds = 2 if quick else 6
    results: dict[str, Any] = {}
    for label, venv in VENVS.items():
        python = venv / "bin" / "python"
        if not python.exists():
            log(f"B3: {venv} not found; skipping {label}")
            continue
        version = subprocess.run(
            [str(python), "-c", "from importlib.metadata import version; print(version('apache-airflow'))"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        env = _env(home)
        files = [BASELINE, *EXAMPLES]
        _parse_once(python, BASELINE, env)  # fill the OS file cache and write airflow.cfg once
        samples: dict[str, list[dict[str, float]]] = {path.stem: [] for path in files}
        for round_no in range(rounds):
            log(f"B3 {label}: round {round_no + 1}/{rounds}")
            for path in files:
                samples[path.stem].append(_parse_once(python, path, env))
        base_wall = statistics.median(s["wall_s"] for s in samples[BASELINE.stem])
        base_cpu = statistics.median(s["cpu_s"] for s in samples[BASELINE.stem])
        rows = []
        for path in files:
            walls = [s["wall_s"] for s in samples[path.stem]]
            cpus = [s["cpu_s"] for s in samples[path.stem]]
            row: dict[str, Any] = {
                "dag_file": path.name,
                "wall_s": summary(walls),
                "cpu_s": summary(cpus),
                "ratio_wall": statistics.median(walls) / base_wall,
                "ratio_cpu": statistics.median(cpus) / base_cpu,
            }
            if path is not BASELINE:
                row.update(_own_import_ms(python, path, env))
            rows.append(row)
        results[label] = {"airflow": version, "rounds": rounds, "rows": rows}
    return results


if __name__ == "__main__":
    print(json.dumps(bench(Path(os.environ.get("AIRFLOW_HOME", "/tmp")), quick=True), indent=1))
