"""The README and the command line stay in step: every command, flag and setting documented."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from digest.cli import main
from digest.cli.parser import build_parser
from digest.settings.model import OPTIONS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_command_and_flag_is_in_the_readme() -> None:
    for name, sub in subcommands().items():
        assert f"`digest {name}" in README, name
        for action in sub._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag not in ("--help", "--config"):
                    assert flag in README, f"{name} {flag}"


def test_every_setting_is_in_the_readme() -> None:
    for option in OPTIONS:
        assert f"| `{option.name}` | `DIGEST_{option.name.upper()}` |" in README, option.name


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def test_the_readme_states_the_bounds_of_each_setting() -> None:
    rows = {line.split("`")[1]: line for line in README.splitlines() if line.startswith("| `")}
    for option in OPTIONS:
        row = rows[option.name]
        if option.low is not None and option.high is not None:
            assert f"{_number(option.low)} to {_number(option.high)}" in row, option.name
        elif option.high is not None:
            assert f"at most {_number(option.high)}" in row, option.name


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_command_has_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    assert len(capsys.readouterr().out) > 50


def test_readme_opens_with_the_two_commands() -> None:
    block = README.split("```sh", 1)[1].split("```", 1)[0].strip().splitlines()
    assert len(block) == 2
    assert block[0].endswith("digest --config examples/digest.toml run")
    assert block[1].endswith("python -m pytest")
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text(encoding="utf-8")
    assert block[1] in ci
