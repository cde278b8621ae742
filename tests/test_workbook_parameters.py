"""``python -m cvaia workbook -p NAME VALUE``: values read like papermill's ``-p`` (lists as
YAML), names checked against the notebooks' parameters (``experiments.COMMON`` and
``pNN.PROFILES``), each given only to the notebooks that have it and recorded in summary.json.
Nothing is executed: ``execute_notebook`` is replaced by a recorder of what papermill would
inject."""

from __future__ import annotations

import json

import pytest

from cvaia import workbook
from cvaia.__main__ import main

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
        output.parent.mkdir(parents=True, exist_ok=True)
        return workbook.NotebookResult(name=source.stem, source=source, output=output, ok=True)

    monkeypatch.setattr(workbook, "execute_notebook", fake_execute)
    root = tmp_path / "data"
    (root / "train" / "rgb").mkdir(parents=True)
    return {"seen": seen, "root": root, "out": tmp_path / "executed"}


def test_cli_p_reaches_the_notebooks_and_is_recorded(injected, capsys):
    rc = main(["workbook", "--profile", "quick", "--dataset_root", str(injected["root"]), "--device", "cpu",
               "--out", str(injected["out"]), "-p", "SEED", "10", "-p", "SEEDS", "[10, 11, 12]"])
    assert rc == 0, capsys.readouterr().err
    seen = injected["seen"]
    assert sorted(seen) == ["00", "01", "02", "03", "04", "05"]
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
