"""Notebook parameter resolution: profiles fill values, unknown names fail loudly."""

from __future__ import annotations

import types

import pytest

from cvaia import experiments
from cvaia.experiments import ParameterError, resolve


@pytest.fixture()
def fake_problem(monkeypatch):
    mod = types.ModuleType("cvaia.experiments.p99")
    mod.PROFILES = {
        "smoke": {"EPOCHS": 1, "IMAGES": 8},
        "quick": {"EPOCHS": 2, "IMAGES": 64},
        "full": {"EPOCHS": 16, "IMAGES": 0},
    }
    monkeypatch.setitem(__import__("sys").modules, "cvaia.experiments.p99", mod)
    return "99"


def test_profile_fills_none_and_keeps_given(fake_problem):
    p = resolve(fake_problem, {"PROFILE": "smoke", "EPOCHS": None, "IMAGES": 3, "other": 1})
    assert p.PROFILE == "smoke" and p.EPOCHS == 1 and p.IMAGES == 3
    assert p.DEVICE == "auto" and p.SEED == 0


def test_unknown_parameter_fails_loudly(fake_problem):
    with pytest.raises(ParameterError, match="EPOHCS"):
        resolve(fake_problem, {"PROFILE": "quick", "EPOHCS": 3})


def test_bad_profile(fake_problem):
    with pytest.raises(ParameterError, match="PROFILE"):
        resolve(fake_problem, {"PROFILE": "fast"})


def test_default_profile_from_env(fake_problem, monkeypatch):
    monkeypatch.setenv("CVAIA_PROFILE", "smoke")
    assert resolve(fake_problem, {}).PROFILE == "smoke"
    monkeypatch.delenv("CVAIA_PROFILE")
    assert experiments.default_profile("cpu") == "quick"


def test_unknown_problem():
    with pytest.raises(ParameterError, match="unknown problem"):
        resolve("77", {})


def test_configure_threads_order(monkeypatch):
    import torch

    from cvaia.experiments.common import THREADS_ENV, configure_threads

    before = torch.get_num_threads()
    try:
        assert configure_threads("cpu", threads=1) == 1
        monkeypatch.setenv(THREADS_ENV, "2")
        assert configure_threads("cpu") == 2
        monkeypatch.setenv(THREADS_ENV, "many")
        with pytest.raises(ValueError, match=THREADS_ENV):
            configure_threads("cpu")
        monkeypatch.delenv(THREADS_ENV)
        monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
        assert configure_threads("cpu") == 1  # parallel test workers: one thread each
        with pytest.raises(ValueError, match="positive"):
            configure_threads("cpu", threads=0)
    finally:
        torch.set_num_threads(before)


def test_configure_threads_follows_the_hardware_not_the_load(monkeypatch):
    import torch

    from cvaia.experiments.common import THREADS_ENV, configure_threads

    before = torch.get_num_threads()
    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    try:
        # the same count however busy the machine is (the load is never sampled)
        assert configure_threads("cpu") == 2
        assert configure_threads("cpu") == 2
    finally:
        torch.set_num_threads(before)
