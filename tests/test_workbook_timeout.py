"""The workbook runner's per-cell execution timeout: a stuck cell fails with a message, never hangs."""

from __future__ import annotations

import time

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from cvaia import workbook


def _book(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    nb = new_notebook(cells=[
        new_code_cell('PROFILE = None\nDATASET_ROOT = ""\nDEVICE = "auto"', metadata={"tags": ["parameters"]}),
        new_code_cell("x = 1"),
        new_code_cell("import time\ntime.sleep(120)  # stands for a hung widget cell"),
        new_code_cell("never = True"),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, nbs / "00_stuck.ipynb")
    root = tmp_path / "data"
    (root / "train" / "rgb").mkdir(parents=True)
    return nbs, root


@pytest.mark.slow
def test_stuck_cell_times_out_with_a_clear_message(tmp_path, monkeypatch, isolated_dirs):
    nbs, root = _book(tmp_path)
    monkeypatch.setitem(workbook.CELL_TIMEOUT_S, "smoke", 3.0)  # the profile's default applies
    lines = []
    t0 = time.perf_counter()
    [result] = workbook.run_workbook("smoke", out=tmp_path / "out", dataset_root=root, notebooks_dir=nbs,
                                     build_data=False, probe=False, log=lines.append)
    assert time.perf_counter() - t0 < 60
    assert not result.ok
    assert "did not finish within 3 s" in result.error and "--timeout" in result.error
    executed = nbformat.read(result.output, as_version=4)
    assert "time.sleep(120)" in executed.cells[result.failed_cell_index].source
    assert result.failed_cell == executed.cells[result.failed_cell_index].execution_count
    assert any("FAILED at cell [" in line and "did not finish" in line for line in lines)


def test_timeout_defaults_and_bad_values(tmp_path):
    assert set(workbook.CELL_TIMEOUT_S) == set(workbook.PROFILES)
    assert all(v > 0 for v in workbook.CELL_TIMEOUT_S.values())
    with pytest.raises(workbook.WorkbookError, match="--timeout"):
        workbook.run_workbook("smoke", out=tmp_path, execution_timeout=-1, build_data=False)
