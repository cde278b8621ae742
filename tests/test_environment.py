"""The conda environment.yml and pyproject.toml describe the same environment."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

try:  # Python >= 3.11
    import tomllib
except ImportError:  # Python 3.10: the tomli backport, when installed
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent


def _load():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    return pyproject, env


def test_environment_installs_this_package_with_dev_extra():
    pyproject, env = _load()
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert pip_sections, "environment.yml needs a pip: section"
    pip_lines = [s.replace(" ", "") for s in pip_sections[0]]
    assert "-e.[dev]" in pip_lines, "environment.yml must install the package with `-e .[dev]`"
    assert "dev" in pyproject["project"]["optional-dependencies"]
    assert "pip" in env["dependencies"]


def test_python_version_matches():
    pyproject, env = _load()
    requires = pyproject["project"]["requires-python"]
    pythons = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert len(pythons) == 1
    m_req = re.search(r">=\s*([\d.]+)", requires)
    m_env = re.search(r">=\s*([\d.]+)", pythons[0])
    assert m_req and m_env and m_req.group(1) == m_env.group(1)


def test_no_dependency_listed_twice_or_only_in_conda():
    pyproject, env = _load()
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    # conda supplies only the interpreter and pip; every library comes from pyproject via pip
    assert sorted(re.split(r"[<>=]", d)[0] for d in conda) == ["pip", "python"]
    deps = [re.split(r"[<>=\[ ]", d)[0].lower() for d in pyproject["project"]["dependencies"]]
    assert len(deps) == len(set(deps))
