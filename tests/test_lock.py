"""The node's burn lock (harness/lock.py): one burn at a time, released however its holder ends."""

import multiprocessing
import os
import subprocess
import sys

import pytest

from harness import lock
from harness.errors import ConfigError


def test_a_second_holder_is_refused_naming_the_first_and_the_lock_is_free_after(tmp_path):
    with lock.hold(tmp_path, "run-a"):
        with pytest.raises(ConfigError) as caught:
            with lock.hold(tmp_path, "run-b"):
                pytest.fail("two holders")
        assert f"pid {os.getpid()}, run 'run-a'" in str(caught.value)
    with lock.hold(tmp_path, "run-c"):
        pass


def test_a_killed_holder_leaves_no_lock_behind(tmp_path):
    code = (
        "import os, pathlib\nfrom harness import lock\n"
        f"with lock.hold(pathlib.Path({str(tmp_path)!r}), 'r'):\n    os.kill(os.getpid(), 9)"
    )
    killed = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert killed.returncode == -9
    with lock.hold(tmp_path, "after"):
        pass


def _hold_and_wait(directory, ready, done):
    with lock.hold(directory, "20261207T000000Z-parent"):
        ready.set()
        done.wait(30)


def test_a_child_may_only_claim_a_lock_its_parent_holds_for_its_run(tmp_path):
    with pytest.raises(ConfigError, match="not held"):
        lock.check_held(tmp_path, "20261207T000000Z-parent", os.getpid())  # no lock file at all
    with lock.hold(tmp_path, "20261207T000000Z-parent"):
        lock.check_held(tmp_path, "20261207T000000Z-parent", os.getpid())
        with pytest.raises(ConfigError, match="not held"):
            lock.check_held(tmp_path, "20261207T000000Z-other", os.getpid())
        with pytest.raises(ConfigError, match="not held"):
            lock.check_held(tmp_path, "20261207T000000Z-parent", os.getpid() + 1)
    with pytest.raises(ConfigError, match="not held"):  # the file remains, its holder is gone
        lock.check_held(tmp_path, "20261207T000000Z-parent", os.getpid())
    context = multiprocessing.get_context("spawn")
    ready, done = context.Event(), context.Event()
    holder = context.Process(target=_hold_and_wait, args=(tmp_path, ready, done))
    holder.start()
    try:
        assert ready.wait(30)
        lock.check_held(tmp_path, "20261207T000000Z-parent", holder.pid)
    finally:
        done.set()
        holder.join(30)


def test_a_link_planted_as_the_lock_is_not_followed(tmp_path):
    target = tmp_path / "precious"
    target.write_text("keep")
    (tmp_path / lock.NAME).symlink_to(target)
    with pytest.raises(ConfigError):
        with lock.hold(tmp_path, "r"):
            pass
    assert target.read_text() == "keep"
