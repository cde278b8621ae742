"""Shared fixtures: a tiny synthetic data set (built once per session) and isolated store dirs."""

from __future__ import annotations

import os

import pytest
import torch

# Deterministic and light on the 2-core machine (xdist runs two workers).
torch.set_num_threads(1)
os.environ.setdefault("MPLBACKEND", "Agg")

def _temp_room() -> tuple[str, float]:
    import shutil
    import tempfile

    tmp = tempfile.gettempdir()
    return tmp, shutil.disk_usage(tmp).free / 2**30


def pytest_report_header(config):
    tmp, free = _temp_room()
    return f"temporary files: {tmp} ({free:.1f} GiB free; the suite needs about 1 GiB at a time)"


def pytest_sessionstart(session):
    """A full disk shows up as many unrelated failures (checkpoints that cannot be written):
    say so first, even under -q."""
    tmp, free = _temp_room()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if free < 2 and reporter is not None:
        reporter.write_line(f"WARNING: only {free:.1f} GiB free in {tmp}; the suite writes about "
                            "1 GiB of checkpoints at a time and fails where it cannot", red=True)


TINY = dict(height=64, width=128, n_train=12, n_val=4, n_test=4, seed=7)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """A miniscapes-format synthetic set: 12 train / 4 val / 4 test images of 64x128."""
    from cvaia.data.synth import generate

    root = tmp_path_factory.mktemp("tiny_synth") / "synthetic"
    generate(root, workers=1, **TINY)
    return root


@pytest.fixture()
def isolated_dirs(tmp_path, monkeypatch):
    """Point the run store and figure export at a temporary folder."""
    runs = tmp_path / "runs"
    figs = tmp_path / "figures"
    monkeypatch.setenv("CVAIA_RUNS_DIR", str(runs))
    monkeypatch.setenv("CVAIA_FIGURES_DIR", str(figs))
    return {"runs": runs, "figures": figs}
