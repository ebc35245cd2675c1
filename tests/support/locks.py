"""
The lock files under ``locks/`` and what an installed environment holds, compared.

A lock is ``uv pip compile --universal --generate-hashes`` output: one ``name==version`` requirement per package,
with an environment marker where a package applies only to some Pythons or platforms. ``.ci/check_venv.py`` uses
this to refuse a venv that differs from its lock, and ``make lock`` to print what a re-resolution changed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

#: What a venv built by the Makefile holds besides its lock: the checkout itself (installed editable) and the
#: installers that ``python -m venv`` and the set-up put there.
NOT_LOCKED = frozenset({"airflow-provider-bitrix24", "pip", "setuptools", "uv"})


def requirements(text: str) -> list[Requirement]:
    """Every requirement of a lock file's text (continuation lines joined, hashes and comments dropped)."""
    joined = re.sub(r"\\\n", " ", text)
    found = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        found.append(Requirement(re.sub(r"\s--hash=\S+", "", line).strip()))
    return found


def pinned(text: str, environment: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{canonical name: version}`` of the packages a lock installs in ``environment`` (default: this one)."""
    pins: dict[str, str] = {}
    for req in requirements(text):
        if req.marker is not None and not req.marker.evaluate(dict(environment) if environment else None):
            continue
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==":
            raise ValueError(f"{req}: a lock pins every package with ==")
        pins[canonicalize_name(req.name)] = specs[0].version
    return pins


def installed(distributions: Iterable[metadata.Distribution] | None = None) -> dict[str, str]:
    """``{canonical name: version}`` of what the running interpreter has installed."""
    dists = metadata.distributions() if distributions is None else distributions
    return {canonicalize_name(d.metadata["Name"]): d.version for d in dists}


def differences(
    locked: Mapping[str, str], have: Mapping[str, str], not_locked: Iterable[str] = NOT_LOCKED
) -> list[str]:
    """What ``have`` (installed) lacks, holds at another version, or holds beyond the lock; empty when they match."""
    extra_ok = {canonicalize_name(n) for n in not_locked}
    problems = [
        f"{name}: locked {version}, installed {have[name]}" if name in have else f"{name}: locked {version}, missing"
        for name, version in sorted(locked.items())
        if have.get(name) != version
    ]
    problems += [
        f"{name} {version}: installed, not in the lock"
        for name, version in sorted(have.items())
        if name not in locked and name not in extra_ok
    ]
    return problems


def changes(old_text: str, new_text: str) -> list[str]:
    """Lines ``name: old -> new`` (or added/removed) between two versions of a lock, for every marker."""

    def versions(text: str) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for req in requirements(text):
            out.setdefault(canonicalize_name(req.name), set()).update(s.version for s in req.specifier)
        return out

    old, new = versions(old_text), versions(new_text)
    lines = []
    for name in sorted(old.keys() | new.keys()):
        before, after = ", ".join(sorted(old.get(name, ()))), ", ".join(sorted(new.get(name, ())))
        if before != after:
            lines.append(f"{name}: {before or '(none)'} -> {after or '(removed)'}")
    return lines


def lock_of(venv: Path) -> Path | None:
    """The lock a Makefile venv was built from (``<venv>/.lock``, relative to the checkout holding the venv)."""
    record = venv / ".lock"
    return venv.parent / record.read_text().strip() if record.is_file() else None
