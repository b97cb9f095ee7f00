import os
import subprocess
import sys
import textwrap
import time

import pytest

from harness.workers import WorkerGroup

T = "tests.worker_targets"


def group(target: str, jobs=({},), **limits) -> WorkerGroup:
    settings = {"startup_s": 60.0, "stall_s": 60.0, "limit_s": 120.0} | limits
    return WorkerGroup(f"{T}:{target}", list(jobs), **settings)


def test_workers_send_messages_and_take_commands():
    with group("echo", jobs=[{"value": 1}, {"value": 5}]) as workers:
        values = {i: m["value"] for i, m in workers.messages(until="value")}
        for i in range(len(workers)):
            workers.send(i, {"n": i})
        replies = {i: m["got"] for i, m in workers.messages(until="reply")}
        workers.join()
        ends = [workers.end(i) for i in range(len(workers))]
    assert values == {0: 2, 1: 10}
    assert replies == {0: {"n": 0}, 1: {"n": 1}}
    assert [e.status for e in ends] == ["done", "done"]


def test_an_exception_in_a_worker_comes_back_with_its_traceback():
    with group("fail") as workers:
        assert list(workers.messages(until="never")) == []
        end = workers.end(0)
    assert end.status == "error" and end.phase == "ready"
    assert "RuntimeError: CUDA error: an illegal memory access" in end.error
    assert "Traceback" in end.error


def test_a_command_to_a_worker_that_died_settles_it_as_crashed():
    with group("die_after_burned") as workers:
        assert [m["type"] for _, m in workers.messages(until="burned")] == ["burned"]
        time.sleep(1.0)  # it exits right after; the parent has not noticed yet
        assert workers.end(0).status == "running"
        workers.send(0, {"rows": {}})
        end = workers.end(0)
    assert end.status == "crashed" and "exit code 3" in end.error


def test_a_process_that_survives_sigkill_is_let_go_rather_than_joined_for_ever():
    import multiprocessing.process as mp_process

    from harness import workers

    class Unkillable:  # a process stuck in the driver: signals are sent, it never exits
        def terminate(self):
            pass

        def kill(self):
            pass

        def join(self, timeout=None):
            pass

        def is_alive(self):
            return True

    stuck = Unkillable()
    mp_process._children.add(stuck)
    assert workers._terminate(stuck) is True
    assert stuck not in mp_process._children


def test_a_worker_killed_by_a_signal_is_reported_crashed():
    with group("crash") as workers:
        list(workers.messages(until="never"))
        end = workers.end(0)
    assert end.status == "crashed"
    assert "signal SIGKILL during about to crash" in end.error


def test_a_stalled_worker_is_killed_within_its_limit_even_if_it_ignores_sigterm():
    began = time.monotonic()
    with group("stall", stall_s=1.0) as workers:
        list(workers.messages(until="never"))
        end = workers.end(0)
    elapsed = time.monotonic() - began
    assert end.status == "hung"
    assert "no progress for 1 s (limit 1 s) during stalling" in end.error
    assert end.exitcode == -9  # SIGTERM was ignored; SIGKILL was not
    assert elapsed < 15


def test_killing_a_stuck_worker_does_not_make_a_healthy_one_look_hung():
    # The stuck one ignores SIGTERM, so killing it takes over 2 s: longer than the stall limit.
    with group("stall_or_steady", jobs=[{"stall": True}, {"stall": False}], stall_s=1.0) as workers:
        list(workers.messages(until="finished"))
        workers.join()
        ends = [workers.end(i).status for i in range(2)]
    assert ends == ["hung", "done"]


def test_a_worker_that_never_starts_is_hung_after_the_startup_limit():
    with group("slow_start", startup_s=1.0) as workers:
        list(workers.messages(until="never"))
        end = workers.end(0)
    assert end.status == "hung" and "did not start within 1 s" in end.error


def test_the_overall_limit_applies_even_while_a_worker_keeps_talking():
    with group("stall", stall_s=30.0, limit_s=1.0) as workers:
        list(workers.messages(until="never"))
        assert workers.end(0).status == "hung"
        assert "still running after the limit of 1 s" in workers.end(0).error


def test_a_worker_exits_when_its_parent_dies(tmp_path):
    parent = textwrap.dedent(
        f"""
        import sys, time
        from harness.workers import WorkerGroup
        if __name__ == "__main__":
            with WorkerGroup("{T}:report_pid_then_wait", [{{}}], startup_s=60, stall_s=60, limit_s=60) as g:
                for _, m in g.messages(until="pid"):
                    print(m["pid"], flush=True)
                time.sleep(60)
        """
    )
    script = tmp_path / "parent.py"
    script.write_text(parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    worker_pid = int(process.stdout.readline())
    process.kill()
    process.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(worker_pid):
        time.sleep(0.1)
    assert not _alive(worker_pid)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("limit", ["startup_s", "stall_s", "limit_s"])
def test_limits_are_checked_per_group_not_per_message(limit):
    # A worker that finishes quickly is never reported hung, whatever the limits.
    with group("echo", jobs=[{"value": 1}], **{limit: 30.0}) as workers:
        list(workers.messages(until="value"))
        workers.send(0, {})
        list(workers.messages(until="reply"))
        workers.join()
        assert workers.end(0).status == "done"
