"""The workbook's notebooks: structure (fast) and execution under the smoke profile (slow).

Every ``notebooks/NN_*.ipynb`` is picked up automatically. Execution runs papermill with
``PROFILE="smoke"`` on a small synthetic set built once per session, with the run store,
figures, headline numbers and extra data sets all redirected into ``tmp_path``; it checks
that figures were exported and the headline numbers are finite. nbval (``--nbval-lax``)
runs on a papermill-parameterised copy of notebook 00 in a subprocess.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from cvaia import paths

NOTEBOOK_DIR = paths.REPO_ROOT / "notebooks"
NOTEBOOKS = sorted(p for p in NOTEBOOK_DIR.glob("*.ipynb") if p.stem[:2].isdigit())
IDS = [p.stem for p in NOTEBOOKS]
#: Notebooks also checked with nbval (kept small: each one costs a second execution).
NBVAL_NOTEBOOKS = [p for p in NOTEBOOKS if p.stem.startswith("00_")]
#: The smoke profiles are sized for this set (they ask for 8 training and 4 val images).
SMOKE_SET = dict(height=64, width=128, n_train=24, n_val=8, n_test=8, seed=7)
CLASS_DEF = re.compile(r"^\s*class\s+\w+.*:", re.MULTILINE)


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def test_notebooks_exist():
    stems = [p.stem for p in NOTEBOOKS]
    for expected in ("00_data_and_setup", "01_semantic_segmentation", "02_depth_estimation"):
        assert expected in stems


# ---- structure (fast) ---------------------------------------------------------------------------
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_without_outputs(path):
    proc = subprocess.run([sys.executable, "-m", "nbstripout", "--verify", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"{path.name} has outputs or execution counts; run nbstripout on it\n{proc.stdout}"
    nb = _read(path)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_structure(path):
    nb = _read(path)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    tagged = [i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: expected exactly one cell tagged 'parameters', found {len(tagged)}"
    params = code[tagged[0]].source
    for name in ("PROFILE", "DATASET_ROOT", "DEVICE", "SEED"):
        assert re.search(rf"^{name}\s*=", params, re.MULTILINE), f"{path.name}: parameter {name} missing"
    assert tagged[0] == 1, f"{path.name}: the parameters cell must follow the import cell"
    number = path.stem[:2]
    assert f'resolve("{number}"' in code[tagged[0] + 1].source, f"{path.name}: the cell after the parameters must resolve them"
    assert "record_headline" in code[-1].source, f"{path.name}: the last code cell must record the headline numbers"
    for cell in code:  # the students' stubs (cells tagged "exercise") are the one exception
        if "exercise" not in cell.metadata.get("tags", []):
            assert not CLASS_DEF.search(cell.source), f"{path.name}: class definition in a code cell:\n{cell.source}"


# ---- execution (slow) ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def smoke_root(tmp_path_factory):
    """The small synthetic set the smoke profiles run on (built once per session)."""
    from cvaia.data.synth import generate

    root = tmp_path_factory.mktemp("nb_data") / "synthetic"
    generate(root, workers=1, **SMOKE_SET)
    return root


@pytest.fixture()
def nb_env(tmp_path, monkeypatch):
    """Store, figures, headlines and extra data sets of the executed notebook go to tmp_path."""
    dirs = {k: tmp_path / k for k in ("runs", "figures", "headlines", "data")}
    monkeypatch.setenv("CVAIA_RUNS_DIR", str(dirs["runs"]))
    monkeypatch.setenv("CVAIA_FIGURES_DIR", str(dirs["figures"]))
    monkeypatch.setenv("CVAIA_HEADLINES_DIR", str(dirs["headlines"]))
    monkeypatch.setenv("CVAIA_DATA_DIR", str(dirs["data"]))
    monkeypatch.setenv("CVAIA_STATIC_WIDGETS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return dirs


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_executes_smoke(path, smoke_root, nb_env, tmp_path):
    import papermill as pm

    out = tmp_path / path.name
    pm.execute_notebook(str(path), str(out), parameters={"PROFILE": "smoke", "DATASET_ROOT": str(smoke_root)},
                        kernel_name="python3", cwd=str(NOTEBOOK_DIR), progress_bar=False)
    pngs = sorted(nb_env["figures"].glob("*.png"))
    assert pngs, f"{path.name} exported no figure"
    for png in pngs:
        assert png.stat().st_size > 1000
        assert png.with_suffix(".pdf").is_file(), f"{png.name} has no PDF twin"
    headline = nb_env["headlines"] / f"{path.stem[:2]}.json"
    assert headline.is_file(), f"{path.name} recorded no headline numbers"
    values = json.loads(headline.read_text())["values"]
    assert values, f"{path.name}: empty headline"
    bad = {k: v for k, v in values.items() if not (isinstance(v, (int, float)) and math.isfinite(v))}
    assert not bad, f"{path.name}: non-finite headline numbers {bad}"
    executed = _read(out)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors


@pytest.mark.slow
@pytest.mark.parametrize("path", NBVAL_NOTEBOOKS, ids=[p.stem for p in NBVAL_NOTEBOOKS])
def test_nbval_lax_on_parameterised_copy(path, smoke_root, nb_env, tmp_path):
    """nbval has no parameter injection: papermill writes the smoke parameters into a copy first."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    # papermill's loader gives every cell a ``tags`` list, which parameterize_notebook expects
    nb = parameterize_notebook(load_notebook_node(str(path)), {"PROFILE": "smoke", "DATASET_ROOT": str(smoke_root)},
                               kernel_name="python3", language="python")
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "smoke" in injected[0].source
    copy = tmp_path / "nbval" / path.name
    copy.parent.mkdir()
    nbformat.write(nb, copy)
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider",
                           "-p", "no:xdist", "-p", "no:randomly", str(copy)],
                          cwd=copy.parent, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert re.search(r"\d+ passed", proc.stdout)
