"""The watch's options are declared once (harness/watch/config.py): the parser, its defaults and the
mapping back to the config all come from that declaration, as `run`'s come from harness/options.py."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from harness import cli
from harness.watch import command
from harness.watch import config as cfg
from harness.watch.config import Action, Policy, WatchConfig

SHARED = {"--node", "--kubeconfig", "--api-timeout", "--mark-prefix", "-h", "--help"}
"""What the watch takes from the CLI's options shared with the other node commands (the marks' flags too)."""

SAMPLES: dict[str, tuple[str, Any]] = {
    "--journal": ("/tmp/j/journal.jsonl", Path("/tmp/j/journal.jsonl")),
    "--nvml": ("real", "real"),
    "--interval": ("12", 12.0),
    "--hold": ("5", 5),
    "--xid-hold": ("2", 2),
    "--xid-clear-after": ("90", 90.0),
    "--window": ("900", 900.0),
    "--load-samples": ("7", 7),
    "--delta-window": ("1800", 1800.0),
    "--nvml-timeout": ("45", 45.0),
    "--metrics-textfile": ("/tmp/m/watch.prom", Path("/tmp/m/watch.prom")),
    "--baseline-dir": ("/tmp/b", Path("/tmp/b")),
    "--baseline": ("/tmp/b/h100.toml", Path("/tmp/b/h100.toml")),
    "--xid-table": ("/tmp/xid.toml", Path("/tmp/xid.toml")),
    "--results-dir": ("/tmp/r", Path("/tmp/r")),
    "--retest-after": ("3600", 3600.0),
    "--on-warning": ("ignore", Action.IGNORE),
    "--on-fail": ("record", Action.RECORD),
    "--on-critical": ("record", Action.RECORD),
}
"""A value for each flag that differs from its default, and what it must become in the config."""


def watch_parser() -> argparse.ArgumentParser:
    commands = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices["watch"]


def declared() -> dict[str, tuple[str, dataclasses.Field[Any]]]:
    """Each declared flag, with where it lands: a field of the config or of its policy."""
    found = {flag.flag: ("config", field) for field, flag in cfg.flags(WatchConfig)}
    found.update({flag.flag: ("policy", field) for field, flag in cfg.flags(Policy)})
    return found


def test_every_flag_of_the_watch_is_declared_once_in_its_config():
    parser_flags = {s for a in watch_parser()._actions for s in a.option_strings}
    own = {s for s in parser_flags if s not in SHARED and not s.startswith(("--preflight-", "--unhealthy-"))}
    assert own == set(declared()), "a watch flag added by hand, or a declared one missing from the parser"
    assert set(SAMPLES) == set(declared()), "every declared flag needs a sample here"


def test_the_parsers_defaults_are_the_configs():
    parsed = watch_parser().parse_args([])
    config = command.config_from(parsed, "n1")
    assert dataclasses.replace(config, boot_id="") == WatchConfig(node="n1")


@pytest.mark.parametrize("flag", sorted(SAMPLES))
def test_each_flag_reaches_its_field(flag):
    text, wanted = SAMPLES[flag]
    config = command.config_from(watch_parser().parse_args([flag, text]), "n1")
    where, field = declared()[flag]
    holder = config.policy if where == "policy" else config
    assert getattr(holder, field.name) == wanted
    untouched = WatchConfig(node="n1")
    for other in dataclasses.fields(WatchConfig):
        if other.name not in (field.name, "boot_id", "policy"):
            assert getattr(config, other.name) == getattr(untouched, other.name), other.name


@pytest.mark.parametrize(
    ("flag", "bad"),
    [
        ("--interval", "0"),
        ("--interval", "soon"),
        ("--hold", "-1"),
        ("--retest-after", "1e400"),
        ("--on-warning", "request"),
        ("--on-critical", "evict"),
        ("--nvml", "fake"),
        ("--journal", ""),
    ],
)
def test_a_bad_value_is_a_usage_error_naming_the_flag(flag, bad, capsys):
    with pytest.raises(SystemExit) as stopped:
        watch_parser().parse_args([flag, bad])
    assert stopped.value.code != 0
    assert f"argument {flag}" in capsys.readouterr().err


def test_a_policy_from_python_is_held_to_the_same_choices():
    with pytest.raises(Exception, match="--on-warning"):
        Policy(warning=Action.REQUEST)
    assert Policy(fail="record").fail is Action.RECORD  # a string from a journal or a test becomes the enum
