"""Widgets in batch runs: static unless a live frontend is known, and no comm traffic then.

Executing a cell that opens ipywidgets comms can block a headless client forever
(jupyter/nbclient#312: plain ``papermill`` hung on notebook 00's SampleBrowser cell). So a
kernel without a known frontend shows static figures and opens no comm at all; the last
tests execute widget notebooks with *plain* papermill (no cvaia variable set) several times.
"""

from __future__ import annotations

import os
import time

import nbformat
import numpy as np
import pytest

from cvaia import paths, widgets


class FakeKernelShell:
    """What ``IPython.get_ipython()`` returns inside a kernel: a shell with a ``kernel``."""

    def __init__(self, user_ns=None):
        self.kernel = object()
        self.user_ns = dict(user_ns or {})


@pytest.fixture()
def kernel(monkeypatch, tmp_path):
    """Pretend to run in an IPython kernel with no frontend signal of any kind."""
    import IPython

    for var in [k for k in os.environ if k.startswith("PAPERMILL")]:
        monkeypatch.delenv(var)
    for var in (widgets.STATIC_ENV, "JPY_PARENT_PID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    shell = FakeKernelShell()
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    return shell


@pytest.fixture()
def comm_log(monkeypatch):
    """A kernel's comm factory that records every comm opened towards a frontend."""
    import comm

    opened = []

    class RecordingComm(comm.base_comm.BaseComm):
        def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
            opened.append((msg_type, (data or {}).get("state", {}).get("_model_name")))

    monkeypatch.setattr(comm, "create_comm", RecordingComm)
    return opened


def _browser(root):
    return widgets.SampleBrowser(root, split="val")


def test_a_kernel_without_a_known_frontend_is_static(kernel):
    # papermill / nbconvert / nbval kernels: an IPython kernel, but nobody to show widgets to
    assert widgets.live_frontend() is None
    assert widgets.static_mode()


def test_known_live_frontends_are_interactive(kernel, monkeypatch, tmp_path):
    import ipywidgets

    # the kernel's launcher is a running Jupyter server (it wrote jpserver-<pid>.json)
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    monkeypatch.setenv("JPY_PARENT_PID", "4242")
    assert widgets.static_mode()  # no runtime file for that pid: e.g. papermill launched it
    (runtime / "jpserver-4242.json").write_text("{}")
    assert widgets.live_frontend() == "a Jupyter server" and not widgets.static_mode()
    monkeypatch.delenv("JPY_PARENT_PID")
    # a Jupyter page's widget manager opened ipywidgets' control comm
    monkeypatch.setattr(ipywidgets.Widget, "_control_comm", object())
    assert widgets.live_frontend() == "a Jupyter widget manager" and not widgets.static_mode()
    monkeypatch.setattr(ipywidgets.Widget, "_control_comm", None)
    # VS Code puts the notebook's path into the user namespace
    kernel.user_ns["__vsc_ipynb_file__"] = "/x/nb.ipynb"
    assert widgets.live_frontend() == "VS Code"
    # the variable still wins both ways
    monkeypatch.setenv(widgets.STATIC_ENV, "1")
    assert widgets.static_mode()


def test_static_widgets_open_no_comm_until_shown_live(kernel, comm_log, tiny_root, monkeypatch):
    from matplotlib.figure import Figure

    shown = []
    monkeypatch.setattr(widgets, "_display", shown.append)
    b = _browser(tiny_root)
    b.index_slider.value = 2  # the controls still work in the kernel
    assert b.index == 2
    inspector = widgets.BinsInspector(np.zeros((32, 32, 3), np.uint8), np.full((4, 2, 2), 0.25),
                                      np.array([1.0, 2.0, 3.0, 4.0]), click=False)
    explorer = widgets.TaskWeightExplorer([{"w": 0.2, "miou": 10.0}, {"w": 0.8, "miou": 20.0}])
    for w in (b, inspector, explorer):
        widgets.show(w)
    assert comm_log == []  # not a single comm_open / comm_msg
    assert len(shown) == 3 and all(isinstance(f, Figure) for f in shown)

    # the same browser shown live later: its comms are opened then, children first
    monkeypatch.setenv(widgets.STATIC_ENV, "0")
    b.display()
    opens = [name for kind, name in comm_log if kind == "comm_open"]
    assert opens and opens[-1] == "VBoxModel"
    assert {"DropdownModel", "IntSliderModel", "CheckboxModel", "OutputModel"} <= set(opens)
    assert shown[3] is b.widget


def test_widgets_built_live_talk_to_the_frontend(kernel, comm_log, tiny_root, monkeypatch):
    monkeypatch.setenv(widgets.STATIC_ENV, "0")
    _browser(tiny_root)
    assert any(kind == "comm_open" for kind, _ in comm_log)


# ---- plain papermill, no cvaia variable -----------------------------------------------------------
WIDGET_CELLS = [
    "import numpy as np\nfrom cvaia import widgets",
    "ROOT = ''",
    "browser = widgets.SampleBrowser(ROOT, split='val', overlay=True)\nwidgets.show(browser)",
    "explorer = widgets.TaskWeightExplorer([{'w': 0.2, 'miou': 10.0, 'score': 1.0},\n"
    "                                       {'w': 0.8, 'miou': 20.0, 'score': 2.0}], value=0.2)\n"
    "explorer",
    "rng = np.random.default_rng(0)\n"
    "probs = rng.dirichlet(np.ones(8), size=(4, 8)).transpose(2, 0, 1)\n"
    "inspector = widgets.BinsInspector(rng.integers(0, 255, (32, 64, 3), dtype=np.uint8), probs,\n"
    "                                  np.linspace(2, 80, 8))\n"
    "widgets.show(inspector)",
    "print('static', widgets.static_mode())",
]


@pytest.fixture()
def plain_env(monkeypatch, tmp_path):
    """The environment of someone typing ``papermill nb.ipynb out.ipynb`` (no cvaia variables)."""
    for var in [k for k in os.environ if k.startswith(("PAPERMILL", "CVAIA_", "JPY_"))]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("CVAIA_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("CVAIA_FIGURES_DIR", str(tmp_path / "figures"))
    monkeypatch.setenv("CVAIA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MPLBACKEND", "Agg")


def _check_static(executed) -> None:
    assert "widgets" not in executed.metadata  # nbclient keeps widget state only when comms opened
    shown = [c for c in executed.cells if any(w in c.source for w in ("Browser(", "Explorer(", "Inspector("))]
    assert len(shown) == 3
    for cell in shown:
        kinds = {k for o in cell.get("outputs", []) for k in o.get("data", {})}
        assert "image/png" in kinds, cell.source
        assert "application/vnd.jupyter.widget-view+json" not in kinds
    assert "static True" in "".join(o.get("text", "") for o in executed.cells[-1].outputs)


@pytest.mark.slow
def test_plain_papermill_runs_widget_cells_repeatedly(tiny_root, plain_env, tmp_path):
    import papermill as pm

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in WIDGET_CELLS])
    nb.cells[1].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    source = tmp_path / "widgets.ipynb"
    nbformat.write(nb, source)
    for k in range(5):
        out = tmp_path / f"out{k}.ipynb"
        t0 = time.perf_counter()
        # a per-cell timeout turns a hang into a failure instead of a stuck test session
        pm.execute_notebook(str(source), str(out), parameters={"ROOT": str(tiny_root)},
                            kernel_name="python3", progress_bar=False, execution_timeout=120)
        assert time.perf_counter() - t0 < 120
        _check_static(nbformat.read(out, as_version=4))


@pytest.mark.slow
def test_plain_papermill_runs_the_sample_browser_notebook(plain_env, tmp_path):
    """Notebook 00 (the one that hung) under the smoke profile, with plain papermill."""
    import papermill as pm

    from cvaia.data.synth import generate

    root = tmp_path / "data" / "synthetic"
    generate(root, height=64, width=128, n_train=24, n_val=8, n_test=8, seed=7, workers=1)
    source = paths.REPO_ROOT / "notebooks" / "00_data_and_setup.ipynb"
    out = tmp_path / source.name
    pm.execute_notebook(str(source), str(out), parameters={"PROFILE": "smoke", "DATASET_ROOT": str(root)},
                        kernel_name="python3", cwd=str(source.parent), progress_bar=False,
                        execution_timeout=300)
    executed = nbformat.read(out, as_version=4)
    assert "widgets" not in executed.metadata
    browser = [c for c in executed.cells if "SampleBrowser(" in c.source]
    assert browser and any("image/png" in o.get("data", {}) for o in browser[0].outputs)
