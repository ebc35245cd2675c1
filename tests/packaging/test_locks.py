"""
The locks under ``locks/``: what the venvs install, what the Makefile names, and the package's declared bounds.

Every venv the Makefile builds installs exactly one lock (``.ci/make-venv``); these tests hold the running venv to
its lock, and the locks to pyproject.toml and the Makefile, so that a fresh machine gets what CI tested.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.support import locks

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest brings tomli on Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
LOCKS = sorted((ROOT / "locks").glob("*.txt"))


def _makefile(name: str) -> str:
    match = re.search(rf"^{name} \?= (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert match, f"the Makefile sets no {name}"
    return match.group(1)


def test_the_running_venv_holds_exactly_its_lock():
    venv = Path(sys.prefix)
    lock = locks.lock_of(venv)
    if lock is None:
        assert not (venv.parent == ROOT and venv.name.startswith(".venv")), f"{venv} was built without a lock"
        pytest.skip(f"{venv} is not a venv of this checkout's Makefile")
    assert lock.is_file(), lock
    assert locks.differences(locks.pinned(lock.read_text()), locks.installed()) == []


def test_a_venv_that_differs_from_its_lock_is_named_package_by_package():
    locked = {"httpx": "0.28.1", "pendulum": "3.1.0", "requests": "2.32.3"}
    have = {"httpx": "0.28.1", "pendulum": "3.2.0", "rich": "14.0.0", "pip": "25.0", "uv": "0.9.0"}
    assert locks.differences(locked, have) == [
        "pendulum: locked 3.1.0, installed 3.2.0",
        "requests: locked 2.32.3, missing",
        "rich 14.0.0: installed, not in the lock",
    ]


def test_a_lock_pins_for_the_python_it_is_read_on():
    text = (
        "annotated-doc==0.0.6 ; python_full_version < '3.11' \\\n    --hash=sha256:00\n"
        "common-compat==1.20.0 ; python_full_version < '3.11'\ncommon-compat==1.22.0 ; python_full_version >= '3.11'\n"
        "httpx==0.28.1 \\\n    --hash=sha256:11 \\\n    --hash=sha256:22\n    # via airflow\n"
    )
    old = {"python_full_version": "3.10.13", "python_version": "3.10"}
    new = {"python_full_version": "3.13.0", "python_version": "3.13"}
    assert locks.pinned(text, old) == {"annotated-doc": "0.0.6", "common-compat": "1.20.0", "httpx": "0.28.1"}
    assert locks.pinned(text, new) == {"common-compat": "1.22.0", "httpx": "0.28.1"}
    with pytest.raises(ValueError, match="pins every package"):
        locks.pinned("httpx>=0.27\n")


@pytest.mark.parametrize("lock", LOCKS, ids=lambda p: p.name)
def test_every_lock_is_made_by_make_lock_and_hashes_every_package(lock):
    text = lock.read_text()
    assert "#    make lock\n" in text, "write locks with `make lock`, not by hand"
    entries = locks.requirements(text)
    assert entries
    blocks = re.split(r"\n(?=\S)", text)
    unhashed = [b.split()[0] for b in blocks if "==" in b.split(" ", 1)[0] and "--hash=sha256:" not in b]
    assert unhashed == []


def test_the_makefile_airflow_versions_have_their_locks():
    for var, extras in (("AIRFLOW3", ("", "-user", "-bench", "-celery", "-browser")), ("AIRFLOW2", ("",))):
        version = _makefile(var)
        for extra in extras:
            lock = ROOT / "locks" / f"airflow-{version}{extra}.txt"
            assert locks.pinned(lock.read_text()).get("apache-airflow") == version, lock.name


def test_the_airflow_2_locks_keep_what_airflow_2_can_use():
    for name in (f"airflow-{_makefile('AIRFLOW2')}.txt", "lowest-direct.txt"):
        pins = locks.pinned((ROOT / "locks" / name).read_text())
        version = Version(pins["cryptography"])
        assert version < Version("51"), f"{name}: cryptography {version} breaks Airflow 2.11's Fernet wrapper"
        version = Version(pins["universal-pathlib"])
        assert version < Version("0.3"), f"{name}: universal-pathlib {version} breaks Airflow 2's ObjectStoragePath"


def test_the_lowest_lock_holds_every_direct_dependency_at_its_declared_lower_bound():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = locks.pinned((ROOT / "locks" / "lowest-direct.txt").read_text())
    checked = []
    for req in map(Requirement, declared):
        if req.marker is not None and not req.marker.evaluate():
            continue
        bound = next(Version(s.version) for s in req.specifier if s.operator == ">=")
        pinned = Version(pins[canonicalize_name(req.name)])
        assert pinned == bound, f"{req}: the lowest lock has {pinned}; raise the bound or re-lock (make lock)"
        checked.append(req.name)
    assert "apache-airflow" in checked
    assert len(checked) >= 6


def _find_python(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``.ci/find-python`` on a machine whose only interpreter is this one, as ``python3``, with an empty home."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    link = bindir / "python3"
    if not link.exists():
        link.symlink_to(sys.executable)
    env = {"PATH": str(bindir), "HOME": str(tmp_path / "home")}
    return subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(ROOT / ".ci" / "find-python"), *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_each_venv_finds_an_interpreter_its_airflow_supports_or_says_what_to_install(tmp_path):
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    found = _find_python(tmp_path, "3.10", here)
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()).resolve() == Path(sys.executable).resolve()
    # A machine whose python3 is newer than the range (Python 3.13 for Airflow 2.11, say) and has nothing else.
    below = f"3.{sys.version_info[1] - 1}"
    missing = _find_python(tmp_path, "3.9", below, "python3")
    assert missing.returncode == 1
    assert f"No Python between 3.9 and {below} found (tried python3 first). Install one" in missing.stderr
    assert "PYTHON=/path/to/python3.x" in missing.stderr
