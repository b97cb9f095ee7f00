"""pytest's rootdir and configuration file, found again once the plugin's options are known.

pytest finds its rootdir and configuration file from the command line's paths before
any plugin has added its options (pytest-dev/pytest#8846, a known limitation): in
`pytest --gpu-results DIR` it takes DIR for a test path. When DIR exists, the rootdir
moves to DIR or to its common ancestor with the working directory, the project's
configuration is not read, and a run given no test path collects the working
directory (tests/ with it) instead of the configuration's `testpaths`. The form
`--gpu-results=DIR` is read correctly.

`settle` runs in the plugin's `pytest_load_initial_conftests`, the first hook after
pytest has parsed the command line with the plugin's options, when the plugin was
loaded by then (the installed entry point, `-p gputests.plugin`, `PYTEST_PLUGINS`).
When a `--gpu-...` flag was followed by a separate value that exists as a path, it
asks pytest's own search again with the test paths as now parsed and, where the answer
differs, puts it in place. What cannot be put right so late (the configuration's
`addopts`, `pythonpath` or `required_plugins`, already applied or skipped) is a usage
error that names the fix. A checkout that loads the plugin from its root conftest.py
loads it too late for this: with DIR outside the checkout, pytest then does not read
that conftest.py and says the flag is unknown (a usage error, exit 4), never a silent
wrong run.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

PREFIX = "--gpu-"
APPLIED_EARLY = ("addopts", "pythonpath", "required_plugins")
"""Configuration keys pytest applies before any plugin can correct the rootdir."""


def separated(args: Sequence[str]) -> list[str]:
    """The values given to `--gpu-...` flags as separate arguments that exist as paths: what
    pytest's first reading of the command line took for test paths."""
    return [
        value
        for flag, value in zip(args, args[1:], strict=False)
        if flag.startswith(PREFIX) and "=" not in flag and _exists(value)
    ]


def settle(config: pytest.Config, args: Sequence[str]) -> None:
    """Put right the rootdir, configuration file and configuration that a separate `--gpu-...`
    value moved; raises pytest.UsageError where that cannot be done."""
    moved_by = separated(args)
    if not moved_by:
        return
    namespace = config.known_args_namespace
    found = _determine_setup(
        inifile=namespace.inifilename,
        override_ini=namespace.override_ini,
        args=namespace.file_or_dir,
        rootdir_cmd_arg=namespace.rootdir or None,
        invocation_dir=config.invocation_params.dir,
    )
    rootpath, inipath, inicfg = found[0], found[1], found[2]
    if (rootpath, inipath) == (config.rootpath, config.inipath):
        return
    late = [key for key in APPLIED_EARLY if key in inicfg or key in _inicfg(config)]
    if late:
        raise pytest.UsageError(
            f"{moved_by[0]} was read as a test path before the gpu-burnin plugin's options were known, and "
            f"{inipath or rootpath} sets {', '.join(late)}: give the flag its value with '=' "
            f"(for example --gpu-results={moved_by[0]})"
        )
    derived_cutdir = str(config.inipath.parent if config.inipath else config.rootpath)
    config._rootpath = rootpath  # noqa: SLF001 - pytest offers no setter; see the module's docstring
    config._inipath = inipath  # noqa: SLF001
    config._inicfg = inicfg  # noqa: SLF001
    if len(found) > 3:
        config._ignored_config_files = found[3]  # noqa: SLF001
    config._inicache.clear()  # noqa: SLF001
    config._parser.extra_info.update(rootdir=str(rootpath), inifile=str(inipath))  # noqa: SLF001
    if namespace.confcutdir == derived_cutdir:  # pytest's default, not the user's --confcutdir
        namespace.confcutdir = str(inipath.parent if inipath else rootpath)


def _determine_setup(**given: Any) -> tuple[Any, ...]:
    """pytest's own rootdir search, with the arguments this pytest's version takes (8.x has no
    `override_ini`: it applies overrides when reading a value)."""
    from _pytest.config.findpaths import determine_setup

    accepted = inspect.signature(determine_setup).parameters
    return tuple(determine_setup(**{key: value for key, value in given.items() if key in accepted}))


def _inicfg(config: pytest.Config) -> Any:
    return config._inicfg  # noqa: SLF001


def _exists(value: str) -> bool:
    try:
        return Path(value).exists()
    except (OSError, ValueError):
        return False
