"""``python -m cvaia workbook -p NAME VALUE``: values read like papermill's ``-p`` (lists as
YAML), names checked against the notebooks' parameters (``experiments.COMMON`` and
``pNN.PROFILES``), each given only to the notebooks that have it and recorded in summary.json.
Nothing is executed: ``execute_notebook`` is replaced by a recorder of what papermill would
inject."""

from __future__ import annotations

import json
import os

import pytest

from cvaia import workbook
from cvaia.__main__ import main
from cvaia.experiments import common

REAL = workbook.list_notebooks()


def test_values_are_read_like_papermill_and_lists_as_yaml():
    read = workbook.parse_parameter_value
    assert read("10") == 10 and isinstance(read("10"), int)
    assert read("0.5") == 0.5 and read("True") is True and read("None") is None
    assert read("adam") == "adam"
    assert read("[10, 11, 12]") == [10, 11, 12]
    assert read("{partition: gpu}") == {"partition": "gpu"}
    with pytest.raises(workbook.WorkbookError, match="YAML"):
        read("[10, 11")
    assert workbook.cli_parameters([["SEED", "10"], ["SEEDS", "[10, 11, 12]"]], ["SEED: 3\nLR: 0.001"]) == \
        {"SEED": 10, "LR": 0.001, "SEEDS": [10, 11, 12]}
    with pytest.raises(workbook.WorkbookError, match="-y: expected a YAML mapping"):
        workbook.cli_parameters([], ["[1, 2]"])


def test_each_parameter_goes_only_to_the_notebooks_that_have_it():
    chosen = workbook.notebook_overrides(REAL, {"SEED": 10, "SEEDS": [10, 11, 12]}, "quick")
    by_number = {p.stem[:2]: v for p, v in chosen.items()}
    assert by_number["00"] == {"SEED": 10}  # 00 has no SEEDS parameter
    for n in ("01", "02", "03", "04", "05"):
        assert by_number[n] == {"SEED": 10, "SEEDS": [10, 11, 12]}, n


def test_unknown_name_wrong_type_and_runner_names_fail():
    with pytest.raises(workbook.WorkbookError) as info:
        workbook.notebook_overrides(REAL, {"SEEDZ": 1}, "quick")
    assert "SEEDZ" in str(info.value) and "valid names:" in str(info.value) and "SEEDS" in str(info.value)
    with pytest.raises(workbook.WorkbookError, match=r"-p SEEDS: .*parameter SEEDS must be a list"):
        workbook.notebook_overrides(REAL, {"SEEDS": "10,11"}, "quick")
    with pytest.raises(workbook.WorkbookError, match="--profile"):
        workbook.notebook_overrides(REAL, {"PROFILE": "full"}, "quick")
    # a parameter only notebook 01 lacks is unknown when only 00 is selected
    with pytest.raises(workbook.WorkbookError, match="SEEDS"):
        workbook.notebook_overrides(workbook.select_notebooks(REAL, "00"), {"SEEDS": [1]}, "quick")


def test_overrides_name_the_default_folder():
    assert workbook.executed_dir("quick", {}) == workbook.executed_dir("quick")
    tagged = workbook.executed_dir("quick", {"SEED": 10, "SEEDS": [10, 11, 12]})
    assert tagged.name == "quick+SEED=10_SEEDS=10,11,12"
    assert workbook.executed_dir("quick", {"EXECUTOR_OPTIONS": {"a b": "/x"}}).name.startswith("quick+params-")


@pytest.fixture
def injected(monkeypatch, tmp_path, isolated_dirs):
    """Run the CLI with ``execute_notebook`` recording the parameters papermill would get."""
    seen = {}

    def fake_execute(source, output, parameters, **kwargs):
        seen[source.stem[:2]] = dict(parameters)
        seen.setdefault("env", {})[source.stem[:2]] = os.environ.get(common.PROBE_ENV)
        output.parent.mkdir(parents=True, exist_ok=True)
        return workbook.NotebookResult(name=source.stem, source=source, output=output, ok=True)

    monkeypatch.setattr(workbook, "execute_notebook", fake_execute)
    root = tmp_path / "data"
    (root / "train" / "rgb").mkdir(parents=True)
    return {"seen": seen, "root": root, "out": tmp_path / "executed"}


def test_cli_p_reaches_the_notebooks_and_is_recorded(injected, capsys):
    rc = main(["workbook", "--profile", "quick", "--dataset_root", str(injected["root"]), "--device", "cpu",
               "--out", str(injected["out"]), "--no-probe", "-p", "SEED", "10", "-p", "SEEDS", "[10, 11, 12]"])
    assert rc == 0, capsys.readouterr().err
    seen = injected["seen"]
    assert sorted(seen) == ["00", "01", "02", "03", "04", "05", "env"]
    assert seen["00"]["SEED"] == 10 and "SEEDS" not in seen["00"]
    assert seen["03"]["SEEDS"] == [10, 11, 12] and seen["03"]["SEED"] == 10
    assert seen["03"]["PROFILE"] == "quick" and seen["03"]["DEVICE"] == "cpu"
    summary = json.loads((injected["out"] / "summary.json").read_text())
    assert summary["overrides"] == {"SEED": 10, "SEEDS": [10, 11, 12]}
    notebooks = {r["name"][:2]: r for r in summary["notebooks"]}
    assert notebooks["00"]["overrides"] == {"SEED": 10}
    assert notebooks["01"]["overrides"] == {"SEED": 10, "SEEDS": [10, 11, 12]}


def test_cli_unknown_name_fails_loudly(injected, capsys):
    rc = main(["workbook", "--dataset_root", str(injected["root"]), "--out", str(injected["out"]),
               "-p", "SEEDZ", "10"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "SEEDZ" in err and "valid names:" in err and "SEED" in err
    assert injected["seen"] == {}  # nothing ran


# ---- the machine probe and the budget (item 7): a fake probe, nothing is timed ----------------
FAKE_PROBE = {"probe_s": 0.5, "probe_what": "fake", "probe_steps": 5, "torch_threads": 2,
              "batch_size": 8, "crop": 64, "model": "deeplabv3p", "device": "cpu"}


def test_probe_is_recorded_passed_to_the_notebooks_and_states_the_budget(injected, monkeypatch, capsys):
    from cvaia import bench

    monkeypatch.setattr(bench, "machine_probe", lambda **kw: dict(FAKE_PROBE))
    monkeypatch.setattr(common, "configure_threads", lambda device="auto", threads=None: 2)
    rc = main(["workbook", "--profile", "quick", "--dataset_root", str(injected["root"]), "--device", "cpu",
               "--out", str(injected["out"]), "--only", "00,01"])
    out = capsys.readouterr().out
    assert rc == 0
    assert injected["seen"]["env"] == {"00": "0.5", "01": "0.5"}  # every notebook got the probe
    assert common.PROBE_ENV not in os.environ  # and only while it ran
    summary = json.loads((injected["out"] / "summary.json").read_text())
    assert summary["probe"] == FAKE_PROBE
    b = summary["budget"]
    assert b["budget_min"] == 30.0 and b["probe_s"] == 0.5
    assert b["budget_probe_units"] == pytest.approx(30 * 60 / 0.5)
    assert "budget of the quick workbook: 30 min = 3600 probe units" in b["text"]
    assert "1 probe unit = 0.500 s" in b["text"]
    assert b["text"] in out  # the printed summary states it
    from cvaia.report import build_report

    index = build_report(injected["out"]).read_text(encoding="utf-8")
    assert "30 min = 3600 probe units" in index


def test_budget_without_a_probe_or_a_budget():
    b = workbook.budget("smoke", None, 90.0)
    assert b["budget_probe_units"] is None and b["total_probe_units"] is None
    assert b["text"] == "no time budget for the smoke profile; this execution took 1.5 min (no machine probe measured)"
    assert workbook.probe_environ(None) == {}
    assert workbook.probe_environ(FAKE_PROBE) == {common.PROBE_ENV: "0.5", common.PROBE_PIXELS_ENV: str(8 * 64 * 64)}


def test_announce_estimates_from_the_probe(monkeypatch):
    lines = []
    monkeypatch.delenv(common.PROBE_ENV, raising=False)
    assert common.announce(3, 100, log=lines.append) is None
    assert "training 3 run(s): 100 steps" in lines[-1] and "no machine probe" in lines[-1]
    monkeypatch.setenv(common.PROBE_ENV, "0.5")
    monkeypatch.setenv(common.PROBE_PIXELS_ENV, str(8 * 64 * 64))
    assert common.announce(3, 100, log=lines.append) == pytest.approx(50.0)
    assert "100 probe steps × 0.50 s ≈ 50.0 s" in lines[-1]
    assert common.announce(1, 100, cost=4.0, log=lines.append) == pytest.approx(200.0)
    assert "3 min 20 s" in lines[-1]
    monkeypatch.setenv(common.PROBE_ENV, "fast")
    with pytest.raises(ValueError, match=common.PROBE_ENV):
        common.announce(1, 1, log=lines.append)


def test_training_cells_announce_untrained_runs(monkeypatch, isolated_dirs, capsys):
    from cvaia.experiments import p03

    monkeypatch.setenv(common.PROBE_ENV, "0.5")
    monkeypatch.setenv(common.PROBE_PIXELS_ENV, str(8 * 64 * 64))
    P = {**p03.PROFILES["quick"], "SEEDS": [0, 1, 2]}
    configs = p03.joint_seed_configs(P)  # 3 runs × 2 epochs × (500 // 8) steps of the probe's size
    assert [common.planned_steps(c) for c in configs] == [124] * 3
    lines = []
    assert common.announce_configs(configs, log=lines.append) == pytest.approx(3 * 124 * 0.5)
    assert lines == ["training 3 run(s) (p3_joint): 372 steps ≈ 372 probe steps × 0.50 s ≈ 3 min 06 s "
                     "(training steps only, from this machine's probe)"]
    assert common.announce_configs(configs[:1], log=lines.append) == pytest.approx(62.0)  # over a minute
    assert common.announce_configs(configs[:1], min_s=100, log=lines.append) == pytest.approx(62.0)
    assert len(lines) == 2  # under min_s: quiet
    # a bigger crop costs more probe steps: 4x the pixels
    big = configs[0].replace(aug_input_crop_size=128)
    assert common.announce_configs([big], log=lines.append) == pytest.approx(124 * 4 * 0.5)

    class Recorder:  # an executor: run_configs announces before handing the configs over
        def run_configs(self, cfgs, diverged):
            print("handed over")
            return [None] * len(cfgs)

    capsys.readouterr()
    assert common.run_configs(configs, Recorder()) == [None] * 3
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("training 3 run(s)") and printed[1] == "handed over"
