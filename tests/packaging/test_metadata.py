"""The package metadata agrees with itself: Python range, classifiers, tool targets, version source, changelog."""

from __future__ import annotations

import re
import sys

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from tests.helpers import ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:
    tomllib = pytest.importorskip("tomli")

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SUPPORTED = ["3.10", "3.11", "3.12", "3.13"]


def test_the_python_range_is_airflow_3_3s():
    project = PYPROJECT["project"]
    assert project["requires-python"] == ">=3.10"
    classified = [
        c.rsplit(" ", 1)[-1]
        for c in project["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    ]
    assert classified == SUPPORTED
    assert PYPROJECT["tool"]["ruff"]["target-version"] == "py310"
    assert PYPROJECT["tool"]["mypy"]["python_version"] == "3.10"


def _compat_requirements(python: str) -> list[SpecifierSet]:
    found = []
    for line in PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(line)
        if requirement.name != "apache-airflow-providers-common-compat":
            continue
        if requirement.marker is None or requirement.marker.evaluate({"python_version": python}):
            found.append(requirement.specifier)
    return found


@pytest.mark.parametrize("python", SUPPORTED)
def test_common_compat_can_be_installed_on_every_supported_python(python):
    (specifier,) = _compat_requirements(python)
    # 1.21.0 and later need Python 3.11; 1.22.0 brought mask_secret, which the hook uses when it is there.
    newest_for_310 = "1.20.0"
    if python == "3.10":
        assert specifier.contains(newest_for_310)
    else:
        assert not specifier.contains("1.21.0")
        assert specifier.contains("1.22.0")


def test_the_version_has_one_source():
    assert "version" not in PYPROJECT["project"]
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    source = ROOT / PYPROJECT["tool"]["hatch"]["version"]["path"]
    import airflow_provider_bitrix24

    assert re.search(rf'^__version__ = "{re.escape(airflow_provider_bitrix24.__version__)}"$', source.read_text(), re.M)


def test_the_changelog_has_an_unreleased_section_in_keep_a_changelog_style():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog\n")
    assert "## [Unreleased]" in text
    headings = re.findall(r"^### (\w+)$", text, re.M)
    assert headings
    assert set(headings) <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def test_the_browser_marker_is_kept_out_of_the_fast_selection():
    markers = PYPROJECT["tool"]["pytest"]["ini_options"]["markers"]
    assert any(m.startswith("browser:") for m in markers)
    makefile = (ROOT / "Makefile").read_text()
    assert "FAST := not slow and not e2e and not browser" in makefile
