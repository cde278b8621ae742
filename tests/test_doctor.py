"""``python -m cvaia doctor`` on the CPU: the CPU subset runs and passes, the GPU checks are
listed as skipped, and the JSON report holds every check. (On a GPU the same command runs the
GPU checks too; no GPU here.)"""

from __future__ import annotations

import json

from cvaia.__main__ import main
from cvaia.doctor import FAIL, GPU_CHECKS, PASS, SKIP, CheckResult, DoctorReport, _timed


def test_cpu_subset_passes_and_lists_the_gpu_checks(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CVAIA_RUNS_DIR", str(tmp_path / "store"))
    out = tmp_path / "report.json"
    rc = main(["doctor", "--device", "cpu", "--size", "32", "--batch_size", "2", "--steps", "1",
               "--models", "deeplabv3p,adaptive_depth", "--out", str(out)])
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    status = {c["name"]: c["status"] for c in report["checks"]}
    assert rc == 0 and report["ok"] and report["device"] == "cpu", printed
    cpu_checks = ["environment", "data", "train/deeplabv3p/fp32", "train/adaptive_depth/fp32", "resume",
                  "loader", "predict_tta", "bench"]
    assert {n: status.get(n) for n in cpu_checks} == dict.fromkeys(cpu_checks, PASS), status
    assert {n: status.get(n) for n in GPU_CHECKS} == dict.fromkeys(GPU_CHECKS, SKIP), status
    by_name = {c["name"]: c for c in report["checks"]}
    assert by_name["resume"]["data"]["bitwise_equal"] is True  # the CPU promise
    assert by_name["predict_tta"]["data"]["num_images"] == 4
    assert by_name["train/deeplabv3p/fp32"]["data"]["precision"] in ("fp32", None)
    # printed: one line per check, the totals, and which GPU checks were not run
    assert "PASS  resume" in printed and "SKIP  compile" in printed
    assert "8 passed, 0 failed, 7 skipped" in printed
    assert "GPU checks not run here" in printed and "power" in printed.splitlines()[-2]
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").glob("*/done.json"))


def test_a_crashing_check_is_a_failure_not_a_crash():
    logged = []
    res = _timed("boom", lambda: 1 / 0, logged.append)
    assert res.status == FAIL and "ZeroDivisionError" in res.detail and "traceback" in res.data
    assert logged and logged[0].startswith("FAIL  boom")
    report = DoctorReport("cpu", {}, {}, [CheckResult("a", PASS), res, CheckResult("c", SKIP, detail="needs x")])
    assert not report.ok and report.counts() == {PASS: 1, FAIL: 1, SKIP: 1}
    assert "1 passed, 1 failed, 1 skipped" in report.format()
    assert json.loads(json.dumps(report.to_dict()))["ok"] is False


def test_cli_help_and_flag_errors(capsys):
    import pytest

    with pytest.raises(SystemExit) as exc:
        main(["doctor", "--help"])
    assert exc.value.code == 0 and "--device" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["doctor", "--models", "unet"])
    assert "--models: unknown unet" in capsys.readouterr().err


# ---- issue 18, item 4: checks that fail when their path is broken (mutation tests) ---------------
import pytest  # noqa: E402


@pytest.fixture()
def doctor(tmp_path):
    """A doctor on the CPU with its data set built: ``doctor.run(name)`` runs one check."""
    from cvaia.doctor import DoctorSettings, _Doctor

    doc = _Doctor(DoctorSettings(device="cpu", size=32, batch_size=2, steps=1, val_images=2), tmp_path, lambda m: None)
    doc.data()
    calls = []

    def run(name):  # each call in a fresh work folder (runs of an earlier call are not served)
        calls.append(name)
        doc.work = tmp_path / f"call{len(calls)}"
        return _timed(name, getattr(doc, name), lambda m: None)

    doc.run = run
    return doc


def test_resume_verdict_uses_the_measured_noise():
    from cvaia.doctor import RESUME_FLOOR, RESUME_NOISE_FACTOR, resume_verdict

    assert resume_verdict(0.0, 0.0, cuda=False) == (True, 0.0)
    assert resume_verdict(1e-9, 0.0, cuda=False)[0] is False  # the CPU promise is bitwise
    assert resume_verdict(5e-4, 1e-4, cuda=True) == (True, RESUME_NOISE_FACTOR * 1e-4 + RESUME_FLOOR)
    assert resume_verdict(5e-3, 1e-4, cuda=True)[0] is False


@pytest.mark.parametrize("as_gpu", [False, True], ids=["cpu", "gpu-rule"])
def test_the_resume_check_fails_when_the_rng_state_is_not_restored(doctor, monkeypatch, as_gpu):
    """A resume that does not restore the RNG streams (dropout masks, augmentation) FAILs — also
    under the GPU rule (tolerance from two uninterrupted runs), which before passed whatever the
    difference (it only reported it)."""
    from cvaia import train as train_mod

    doctor.cuda = as_gpu  # the GPU rule on a CPU: the noise of two runs is 0 here
    assert doctor.run("resume").status == PASS
    monkeypatch.setattr(train_mod, "set_rng_state", lambda state: None)
    result = doctor.run("resume")
    assert result.status == FAIL and "max weight diff" in result.detail, result.detail


def test_the_loader_check_runs_worker_processes_and_fails_when_batches_go_missing(doctor, monkeypatch):
    from cvaia.data import train_batches

    ok = doctor.run("loader")
    assert ok.status == PASS and "2 workers" in ok.detail, ok.detail
    batches = train_batches.LoaderTrainData.batches

    def one_short(self, epoch):
        items = list(batches(self, epoch))
        yield from items[:-1]

    monkeypatch.setattr(train_batches.LoaderTrainData, "batches", one_short)
    result = doctor.run("loader")
    assert result.status == FAIL and "gave 0 of its 1 batches" in result.detail, result.detail
