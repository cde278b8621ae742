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
                  "predict_tta", "bench"]
    assert {n: status.get(n) for n in cpu_checks} == dict.fromkeys(cpu_checks, PASS), status
    assert {n: status.get(n) for n in GPU_CHECKS} == dict.fromkeys(GPU_CHECKS, SKIP), status
    by_name = {c["name"]: c for c in report["checks"]}
    assert by_name["resume"]["data"]["bitwise_equal"] is True  # the CPU promise
    assert by_name["predict_tta"]["data"]["num_images"] == 4
    assert by_name["train/deeplabv3p/fp32"]["data"]["precision"] in ("fp32", None)
    # printed: one line per check, the totals, and which GPU checks were not run
    assert "PASS  resume" in printed and "SKIP  compile" in printed
    assert "7 passed, 0 failed, 7 skipped" in printed
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
