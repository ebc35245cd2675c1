"""
Check a virtualenv built by the Makefile before it is called ready.

Run with the venv's own interpreter: ``<venv>/bin/python .ci/check_venv.py <venv> <airflow-version> <root> <lock>``.
Fails (exit 1, one line per problem) unless this interpreter is the venv's, Airflow is the expected version,
the provider is imported from the checkout, the dev tools (ruff, mypy, pytest) are in the venv, and every
installed package is the one the lock names, at the lock's version, with nothing more (tests/support/locks.py).
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path


def main() -> int:
    venv, airflow_version, root = Path(sys.argv[1]).resolve(), sys.argv[2], Path(sys.argv[3]).resolve()
    lock = root / sys.argv[4]
    problems: list[str] = []
    if Path(sys.prefix).resolve() != venv or sys.prefix == sys.base_prefix:
        problems.append(f"the interpreter is not the venv's (sys.prefix={sys.prefix})")
    try:
        import airflow

        if airflow.__version__ != airflow_version:
            problems.append(f"Airflow {airflow.__version__} is installed, expected {airflow_version}")
        if not Path(airflow.__file__).resolve().is_relative_to(venv):
            problems.append(f"airflow is imported from {airflow.__file__}, outside {venv}")
    except ImportError as exc:
        problems.append(f"airflow does not import: {exc}")
    try:
        package = importlib.import_module("airflow_provider_bitrix24")
        if not Path(package.__file__ or "").resolve().is_relative_to(root):
            problems.append(f"airflow_provider_bitrix24 is imported from {package.__file__}, not from {root}")
    except ImportError as exc:
        problems.append(f"airflow_provider_bitrix24 does not import: {exc}")
    bindir = venv / "bin"
    for tool in ("ruff", "mypy", "pytest"):
        path = bindir / tool
        if not (path.is_file() and os.access(path, os.X_OK)):
            problems.append(f"{tool} is missing from {bindir}")
    if shutil.which("ruff", path=str(bindir)) is None:
        problems.append("ruff is not executable in the venv")
    sys.path.insert(0, str(root))
    from tests.support import locks

    problems += [
        f"differs from {lock.name}: {p}" for p in locks.differences(locks.pinned(lock.read_text()), locks.installed())
    ]
    for problem in problems:
        print(f"{venv.name}: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
