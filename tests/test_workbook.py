"""The workbook runner on fake tiny notebooks: success, failure reporting, listing, summary."""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import tempfile
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from cvaia import workbook
from cvaia.__main__ import main

PARAMS = 'PROFILE = None\nDATASET_ROOT = ""\nDEVICE = "auto"'

OK_BODY = """
import os
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from cvaia.experiments import record_headline
fig, ax = plt.subplots()
ax.plot([0, 1], [0, 1])
out = os.path.join(os.environ["CVAIA_FIGURES_DIR"], "fake_{nn}.png")
os.makedirs(os.path.dirname(out), exist_ok=True)
fig.savefig(out)
assert PROFILE == "smoke", PROFILE
assert os.path.isdir(os.path.join(DATASET_ROOT, "train", "rgb")), DATASET_ROOT
assert os.path.basename(os.getcwd()) == "nbs", os.getcwd()
record_headline("{nn}", {{"score": {value}}}, timings={{"time_s": 0.5}})
"""


def _notebook(cells) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = cells
    return nb


def _params_cell():
    return new_code_cell(PARAMS, metadata={"tags": ["parameters"]})


@pytest.fixture(scope="module")
def fake_book(tmp_path_factory):
    """Three notebooks (ok, failing at its second code cell, ok) and a fake data root."""
    base = tmp_path_factory.mktemp("book")
    nbs = base / "nbs"
    nbs.mkdir()
    nbformat.write(_notebook([new_markdown_cell("# ok"), _params_cell(),
                              new_code_cell(OK_BODY.format(nn="00", value=41.5))]), nbs / "00_first.ipynb")
    nbformat.write(_notebook([_params_cell(), new_code_cell("x = 1"),
                              new_code_cell("raise ValueError('boom in cell')"),
                              new_code_cell("never = True")]), nbs / "01_broken.ipynb")
    nbformat.write(_notebook([_params_cell(),
                              new_code_cell(OK_BODY.format(nn="02", value="float('nan')"))]), nbs / "02_third.ipynb")
    (nbs / "notes.ipynb").write_text("{}")  # not an NN_ notebook: ignored
    root = base / "data"
    (root / "train" / "rgb").mkdir(parents=True)
    return {"base": base, "nbs": nbs, "root": root}


@pytest.fixture(scope="module")
def book_run(fake_book, tmp_path_factory):
    """``python -m cvaia workbook`` on the fake book (run once for the module)."""
    mp = pytest.MonkeyPatch()
    env = tmp_path_factory.mktemp("env")
    mp.setenv("CVAIA_RUNS_DIR", str(env / "runs"))
    mp.setenv("CVAIA_FIGURES_DIR", str(env / "figures"))
    out = fake_book["base"] / "executed"
    capture = io.StringIO()
    try:
        with contextlib.redirect_stdout(capture):
            rc = main(["workbook", "--profile", "smoke", "--notebooks", str(fake_book["nbs"]),
                       "--dataset_root", str(fake_book["root"]), "--out", str(out), "--device", "cpu",
                       "--no-probe"])
    finally:
        mp.undo()
    return {"rc": rc, "out": out, "text": capture.getvalue(), "env": env}


@pytest.mark.slow
def test_failure_reported_and_others_still_run(book_run):
    assert book_run["rc"] == 1
    out = book_run["out"]
    for name in ("00_first", "01_broken", "02_third"):
        assert (out / f"{name}.ipynb").is_file()
    summary = json.loads((out / "summary.json").read_text())
    by_name = {r["name"]: r for r in summary["notebooks"]}
    assert [r["name"] for r in summary["notebooks"]] == ["00_first", "01_broken", "02_third"]
    assert by_name["00_first"]["ok"] and by_name["02_third"]["ok"]
    broken = by_name["01_broken"]
    assert not broken["ok"]
    # execution count: parameters (1), papermill's injected parameters (2), x = 1 (3), raise (4)
    assert broken["failed_cell"] == 4
    executed = nbformat.read(out / "01_broken.ipynb", as_version=4)
    raising = [c for c in executed.cells if c.get("execution_count") == 4]
    assert len(raising) == 1 and raising[0].source.startswith("raise ValueError")
    assert broken["error"] == "ValueError: boom in cell"
    assert broken["headlines"] == {}


@pytest.mark.slow
def test_headlines_and_figures_collected(book_run):
    summary = json.loads((book_run["out"] / "summary.json").read_text())
    by_name = {r["name"]: r for r in summary["notebooks"]}
    # timed numbers are kept apart from the headline values (they depend on the machine's load)
    assert by_name["00_first"]["headlines"] == {"score": 41.5}
    assert by_name["00_first"]["timings"] == {"time_s": 0.5}
    assert math.isnan(by_name["02_third"]["headlines"]["score"])
    assert [p.rsplit("/", 1)[-1] for p in by_name["00_first"]["figures"]] == ["fake_00.png"]
    assert (book_run["env"] / "figures" / "fake_02.png").is_file()
    assert json.loads((book_run["out"] / "headlines" / "00.json").read_text())["values"]["score"] == 41.5


@pytest.mark.slow
def test_summary_table_printed(book_run):
    text = book_run["text"]
    assert "00_first" in text and "score=41.5" in text
    assert "FAILED" in text and "cell [4]" in text and "ValueError: boom in cell" in text
    assert "3 notebook(s), 1 failed" in text


@pytest.mark.slow
def test_previous_executed_copy_is_kept(book_run, fake_book, isolated_dirs, tmp_path):
    out = tmp_path / "executed"  # a copy: the other tests read the module run's folder
    shutil.copytree(book_run["out"], out)
    first = (out / "00_first.ipynb").read_text()
    results = workbook.run_workbook("smoke", only="00", out=out, notebooks_dir=fake_book["nbs"],
                                    dataset_root=fake_book["root"], device="cpu", probe=False, log=lambda s: None)
    assert [r.name for r in results] == ["00_first"] and results[0].ok
    assert results[0].previous is not None and results[0].previous.read_text() == first
    assert results[0].previous.name.startswith("00_first.prev-")
    assert (out / "00_first.ipynb").is_file()


def test_list(fake_book, capsys):
    assert main(["workbook", "--list", "--notebooks", str(fake_book["nbs"])]) == 0
    assert capsys.readouterr().out.split() == ["00_first", "01_broken", "02_third"]
    assert main(["workbook", "--list", "--notebooks", str(fake_book["nbs"]), "--only", "2,00_first"]) == 0
    assert capsys.readouterr().out.split() == ["00_first", "02_third"]


def test_list_real_notebooks_are_in_order():
    names = [p.stem for p in workbook.list_notebooks()]
    assert names == sorted(names)
    assert all(n[:2].isdigit() and n[2] == "_" for n in names)


def test_bad_inputs(fake_book, capsys):
    assert main(["workbook", "--list", "--notebooks", str(fake_book["nbs"]), "--only", "07"]) == 2
    err = capsys.readouterr().err
    assert "--only" in err and "'07'" in err and "00_first" in err
    with pytest.raises(workbook.WorkbookError, match="--profile"):
        workbook.run_workbook("fast", notebooks_dir=fake_book["nbs"])
    with pytest.raises(workbook.WorkbookError, match="does not exist"):
        workbook.list_notebooks(fake_book["base"] / "nope")
    with pytest.raises(workbook.WorkbookError, match="--dataset_root"):
        workbook.ensure_dataset(fake_book["base"] / "no_data_here", log=lambda s: None)


def test_summary_table_format(tmp_path):
    ok = workbook.NotebookResult("00_a", tmp_path / "a.ipynb", tmp_path / "o.ipynb", ok=True, seconds=12.34,
                                 headlines={"miou": 40.891, "tiny": 1e-5})
    bad = workbook.NotebookResult("01_b", tmp_path / "b.ipynb", tmp_path / "p.ipynb", seconds=1.0,
                                  failed_cell=7, error="RuntimeError: x")
    table = workbook.summary_table([ok, bad])
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["notebook", "status", "time", "figs"]
    assert "00_a" in lines[2] and "ok" in lines[2] and "12.3s" in lines[2]
    assert "miou=40.89" in lines[2] and "tiny=1e-05" in lines[2]
    assert any("error at cell [7]: RuntimeError: x" in line for line in lines)
    assert lines[-1] == "2 notebook(s), 1 failed, 13.3 s in total"


@pytest.mark.slow
def test_report_written_by_the_runner(book_run):
    folder = book_run["out"] / "report"
    index = (folder / "index.html").read_text(encoding="utf-8")
    assert f"report -> {folder / 'index.html'}" in book_run["text"]
    for name in ("00_first", "01_broken", "02_third"):
        assert f'<a href="notebooks/{name}.html">{name}</a>' in index
        assert (folder / "notebooks" / f"{name}.html").is_file()
    assert '<td class="failed">FAILED</td>' in index and "ValueError: boom in cell" in index
    assert sorted(p.name for p in (folder / "figures").iterdir()) == ["fake_00.png", "fake_02.png"]
    assert 'src="figures/fake_00.png"' in index


TCP_WARNING = "Kernel is running over TCP without encryption"


def _run_one(tmp_path, cells):
    nb_path = tmp_path / "00_kernel.ipynb"
    nbformat.write(_notebook([new_code_cell(c) for c in cells]), nb_path)
    return workbook.execute_notebook(nb_path, tmp_path / "out" / nb_path.name, {},
                                     headlines_dir=tmp_path / "headlines")


@pytest.mark.slow
def test_kernel_transport_warning_gone_but_kernel_errors_kept(tmp_path, capfd, caplog, monkeypatch,
                                                             isolated_dirs, request):
    """The kernel writes to the runner's stderr: its TCP warning goes, its real errors stay."""
    caplog.set_level("DEBUG")
    # a short folder: a Unix socket path has at most ~107 bytes, and pytest's tmp paths under
    # xdist can be longer (the runner then keeps TCP, as documented)
    sockets = Path(tempfile.mkdtemp(prefix="cvt-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(sockets, ignore_errors=True))
    monkeypatch.setattr(tempfile, "tempdir", str(sockets))  # where the socket folder is made
    result = _run_one(tmp_path, [
        "from ipykernel.kernelapp import IPKernelApp\n"
        "app = IPKernelApp.instance()\n"
        "app.log.error('deliberate kernel error over %s: disk on fire', app.transport)",
        "import os\nos._exit(3)",  # the kernel dies: the runner must say so
    ])
    out, err = capfd.readouterr()
    assert TCP_WARNING not in out + err + caplog.text
    assert "[IPKernelApp] ERROR | deliberate kernel error over ipc: disk on fire" in err
    assert not result.ok and result.error.startswith("DeadKernelError"), result.error
    assert list(sockets.iterdir()) == []  # the socket folder is gone, even after a crash

    # the same capture does see the warning when the kernel is reached over TCP
    monkeypatch.setattr(workbook, "kernel_transport", lambda: contextlib.nullcontext({}))
    assert _run_one(tmp_path, ["x = 1"]).ok
    assert TCP_WARNING in "".join(capfd.readouterr())
