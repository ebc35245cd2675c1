"""
Check the provider as a user gets it from its wheel (run by ``.ci/package-check``).

Run with the clean venv's interpreter, from a directory outside the checkout, so that only the installed wheel
can be imported. Prints one line per check and fails (exit 1) listing every problem found.
"""

from __future__ import annotations

import argparse
import email
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

PACKAGE = "airflow_provider_bitrix24"
DISTRIBUTION = "airflow-provider-bitrix24"
#: What the wheel must hold (besides its .dist-info): the package, with these files among its modules.
REQUIRED_IN_WHEEL = [
    f"{PACKAGE}/__init__.py",
    f"{PACKAGE}/py.typed",
    f"{PACKAGE}/get_provider_info.py",
    f"{PACKAGE}/hooks/bitrix24.py",
    f"{PACKAGE}/operators/quick_answer.py",
    f"{PACKAGE}/operators/bitrix24.py",
    f"{PACKAGE}/notifications/bitrix24.py",
    f"{PACKAGE}/triggers/messages.py",
    f"{PACKAGE}/queues/bitrix24.py",
    f"{PACKAGE}/transfers/session_history.py",
    f"{PACKAGE}/client/listing.py",
    f"{PACKAGE}/sensors/session_history.py",
    f"{PACKAGE}/triggers/session_history.py",
    f"{PACKAGE}/client/core.py",
    f"{PACKAGE}/sandbox/cli.py",
]
#: Path parts that only the repository may hold.
NOT_FOR_USERS = re.compile(
    r"(^|/)(tests?|benchmarks|example_dags|\.ci|fixtures|\.artifacts|dist|__pycache__|\.venv[^/]*)(/|$)|\.pyc$"
)
SUPPORTED_PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


class Checks:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def check(self, what: str, ok: bool, detail: str = "") -> bool:
        print(f"  {'ok  ' if ok else 'FAIL'} {what}{'' if ok or not detail else f': {detail}'}", flush=True)
        if not ok:
            self.problems.append(f"{what}: {detail}" if detail else what)
        return ok


def source_version(root: Path) -> str:
    text = (root / PACKAGE / "__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    if match is None:
        raise SystemExit(f"no __version__ in {root / PACKAGE / '__init__.py'}")
    return match.group(1)


def check_wheel(checks: Checks, wheel: Path, version: str) -> None:
    print(f"wheel {wheel.name}")
    checks.check("the file name carries the version", wheel.name.startswith(f"{PACKAGE}-{version}-py3-none-any"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        dist_info = f"{PACKAGE}-{version}.dist-info/"
        outside = [n for n in names if not (n.startswith(f"{PACKAGE}/") or n.startswith(dist_info))]
        checks.check("holds only the package and its .dist-info", not outside, ", ".join(outside[:10]))
        leaked = [n for n in names if NOT_FOR_USERS.search(n)]
        checks.check(
            "holds no tests, benchmarks, example DAGs, CI files, fixtures or bytecode", not leaked, str(leaked)
        )
        missing = [n for n in REQUIRED_IN_WHEEL if n not in names]
        checks.check("holds the hook, operator, sensor, trigger, client and sandbox", not missing, str(missing))
        checks.check("holds the Apache-2.0 license text", dist_info + "licenses/LICENSE" in names)
        metadata = email.message_from_bytes(archive.read(dist_info + "METADATA"))
        entry_points = archive.read(dist_info + "entry_points.txt").decode()
    checks.check("METADATA version", metadata["Version"] == version, str(metadata["Version"]))
    checks.check("METADATA Requires-Python", metadata["Requires-Python"] == ">=3.10", str(metadata["Requires-Python"]))
    classifiers = metadata.get_all("Classifier") or []
    pythons = sorted(
        c.rsplit(" ", 1)[-1] for c in classifiers if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    )
    checks.check("classifiers name Python 3.10 to 3.13", pythons == SUPPORTED_PYTHONS, str(pythons))
    checks.check("README is the long description", "Bitrix24" in (metadata.get_payload() or ""))
    checks.check(
        "entry points: provider info and the sandbox script",
        f"provider_info = {PACKAGE}.get_provider_info:get_provider_info" in entry_points
        and f"bitrix24-sandbox = {PACKAGE}.sandbox.cli:main" in entry_points,
        entry_points,
    )


def check_sdist(checks: Checks, sdist: Path, version: str) -> None:
    print(f"sdist {sdist.name}")
    prefix = f"{PACKAGE}-{version}/"
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
    checks.check("the file name carries the version", sdist.name == f"{PACKAGE}-{version}.tar.gz")
    for required in ("PKG-INFO", "pyproject.toml", "README.md", "CHANGELOG.md", "LICENSE", f"{PACKAGE}/__init__.py"):
        checks.check(f"holds {required}", prefix + required in names)
    junk = [n for n in names if re.search(r"/(\.venv[^/]*|\.artifacts|dist|\.git|__pycache__|\.mypy_cache)(/|$)", n)]
    checks.check("holds no venvs, build output, caches or artefacts", not junk, str(junk[:10]))


def run(args: list[str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def check_install(checks: Checks, venv: Path, root: Path, version: str, airflow_version: str) -> None:
    print(f"installed in {venv}")
    import airflow

    import airflow_provider_bitrix24 as package

    location = Path(package.__file__ or "").resolve()
    checks.check("the provider is imported from the venv", location.is_relative_to(venv.resolve()), str(location))
    checks.check(
        "the provider is not imported from the checkout",
        not location.is_relative_to(root / PACKAGE),
        str(location),
    )
    checks.check("__version__", package.__version__ == version, package.__version__)
    checks.check(f"Airflow {airflow_version}", airflow.__version__ == airflow_version, airflow.__version__)

    bindir = venv / "bin"
    proc = run([str(bindir / "airflow"), "providers", "list", "-o", "json"])
    providers = json.loads(proc.stdout) if proc.returncode == 0 else []
    ours = [p for p in providers if p.get("package_name") == DISTRIBUTION]
    checks.check("`airflow providers list` shows the provider", len(ours) == 1, proc.stderr[-2000:])
    if ours:
        checks.check("... with its version", ours[0].get("version") == version, str(ours[0]))
        checks.check("... and its description", "Bitrix24 Open Lines" in str(ours[0].get("description")), str(ours[0]))

    proc = run([str(bindir / "airflow"), "providers", "hooks", "-o", "json"])
    hooks = json.loads(proc.stdout) if proc.returncode == 0 else []
    ours = [h for h in hooks if h.get("connection_type") == "bitrix24"]
    checks.check(
        "`airflow providers hooks` lists bitrix24",
        len(ours) == 1 and ours[0].get("class") == f"{PACKAGE}.hooks.bitrix24.Bitrix24Hook",
        str(ours) or proc.stderr[-2000:],
    )
    check_console_script(checks, bindir / "bitrix24-sandbox")


def wait_for(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def check_console_script(checks: Checks, script: Path) -> None:
    proc = run([str(script), "--help"], timeout=60)
    checks.check("`bitrix24-sandbox --help`", proc.returncode == 0 and "--port-file" in proc.stdout, proc.stderr)
    port_file = Path.cwd() / "sandbox.port"
    server = subprocess.Popen(
        [str(script), "--host", "127.0.0.1", "--port", "0", "--port-file", str(port_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        started = wait_for(lambda: port_file.exists() or server.poll() is not None, 60) and port_file.exists()
        if checks.check("`bitrix24-sandbox` starts and writes its port", started):
            port = int(port_file.read_text())
            url = f"http://127.0.0.1:{port}/rest/1/sandbox-webhook-0000/profile.json"
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(url, timeout=10) as response:
                body = json.load(response)
            checks.check("... and answers a REST call", isinstance(body.get("result"), dict), str(body)[:200])
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
        try:
            out, _ = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            out, _ = server.communicate()
    checks.check("... and stops on SIGTERM with status 0", server.returncode == 0 and "Stopped." in out, out[-1000:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, required=True, help="the checkout")
    parser.add_argument("--venv", type=Path, required=True, help="the clean venv the wheel is installed in")
    parser.add_argument("--wheel", type=Path, required=True)
    parser.add_argument("--sdist", type=Path, required=True)
    parser.add_argument("--airflow", required=True, help="the Airflow version installed beside it")
    args = parser.parse_args()
    if Path(sys.prefix).resolve() != args.venv.resolve():
        raise SystemExit(f"run this with {args.venv}/bin/python, not {sys.executable}")
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost,::1"
    root = args.root.resolve()
    version = source_version(root)
    checks = Checks()
    check_wheel(checks, args.wheel, version)
    check_sdist(checks, args.sdist, version)
    check_install(checks, args.venv, root, version, args.airflow)
    if checks.problems:
        print(f"package-check: {len(checks.problems)} problem(s):", file=sys.stderr)
        for problem in checks.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print(f"package-check: {DISTRIBUTION} {version} OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
