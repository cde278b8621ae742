"""`python -m cvaia`: every command has --help; unknown commands fail clearly."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cvaia.__main__ import COMMANDS, main


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"python -m cvaia {command}" in out


def test_top_level_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out


def test_unknown_command_is_an_error():
    proc = subprocess.run([sys.executable, "-m", "cvaia", "trian"], capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown command 'trian'" in proc.stderr


def test_train_flag_error_names_the_flag():
    proc = subprocess.run([sys.executable, "-m", "cvaia", "train", "--optimizer", "rmsprop"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--optimizer" in proc.stderr and "rmsprop" in proc.stderr
