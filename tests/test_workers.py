import os
import subprocess
import sys
import textwrap
import time

import pytest

from harness.workers import Progress, WorkerGroup, WorkerStatus
from tests import worker_targets as targets
from tests.helpers import alive
from tests.worker_targets import Burned, Command, Finished, Never, Reply, Value


def group(target, jobs=({},), **limits) -> WorkerGroup:
    settings = {"startup_s": 60.0, "stall_s": 60.0, "limit_s": 120.0} | limits
    return WorkerGroup(target, list(jobs), **settings)


def test_workers_send_typed_messages_and_take_commands():
    with group(targets.echo, jobs=[{"value": 1}, {"value": 5}]) as workers:
        values = {i: m.value for i, m in workers.messages(until=Value) if isinstance(m, Value)}
        for i in range(len(workers)):
            workers.send(i, Command(i))
        replies = {i: m.got for i, m in workers.messages(until=Reply) if isinstance(m, Reply)}
        workers.join()
        ends = [workers.end(i) for i in range(len(workers))]
    assert values == {0: 2, 1: 10}
    assert replies == {0: Command(0), 1: Command(1)}
    assert [e.status for e in ends] == [WorkerStatus.DONE, WorkerStatus.DONE]
    assert all(e.started for e in ends)


def test_progress_is_passed_on_with_its_phase():
    with group(targets.steady, jobs=[{"beats": 3}]) as workers:
        phases = [m.phase for _, m in workers.messages(until=Finished) if isinstance(m, Progress)]
    assert phases == ["beat 0", "beat 1", "beat 2"]


def test_an_exception_in_a_worker_comes_back_with_its_traceback():
    with group(targets.fail) as workers:
        assert [type(m) for _, m in workers.messages(until=Never)] == [Progress]
        end = workers.end(0)
    assert end.status is WorkerStatus.ERROR and end.phase == "ready"
    assert "RuntimeError: CUDA error: an illegal memory access" in end.error
    assert "Traceback" in end.error


def test_a_command_to_a_worker_that_died_settles_it_as_crashed():
    with group(targets.die_after_burned) as workers:
        assert [m for _, m in workers.messages(until=Burned)] == [Burned()]
        time.sleep(1.0)  # it exits right after; the parent has not noticed yet
        assert workers.end(0).status is WorkerStatus.RUNNING
        workers.send(0, Command(0))
        end = workers.end(0)
    assert end.status is WorkerStatus.CRASHED and "exit code 3" in end.error


def test_a_command_of_the_wrong_type_is_an_error_in_the_worker():
    with group(targets.wrong_command) as workers:
        list(workers.messages(until=Progress))
        workers.send(0, Command(0))
        workers.join()
        end = workers.end(0)
    assert end.status is WorkerStatus.ERROR and "expected Value from the parent, got Command" in end.error


def test_a_process_that_survives_sigkill_is_let_go_rather_than_joined_for_ever():
    import multiprocessing.process as mp_process

    from harness.workers import process as workers

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
    with group(targets.crash) as workers:
        list(workers.messages(until=Never))
        end = workers.end(0)
    assert end.status is WorkerStatus.CRASHED
    assert "signal SIGKILL during about to crash" in end.error


@pytest.mark.slow
def test_a_stalled_worker_is_killed_within_its_limit_even_if_it_ignores_sigterm():
    began = time.monotonic()
    with group(targets.stall, stall_s=1.0) as workers:
        list(workers.messages(until=Never))
        end = workers.end(0)
    elapsed = time.monotonic() - began
    assert end.status is WorkerStatus.HUNG and end.started
    assert "no progress for 1 s (limit 1 s) during stalling" in end.error
    assert end.exitcode == -9  # SIGTERM was ignored; SIGKILL was not
    assert elapsed < 15


@pytest.mark.slow
def test_killing_a_stuck_worker_does_not_make_a_healthy_one_look_hung():
    # The stuck one ignores SIGTERM, so killing it takes over 2 s: longer than the stall limit.
    with group(targets.stall_or_steady, jobs=[{"stall": True}, {"stall": False}], stall_s=1.0) as workers:
        list(workers.messages(until=Finished))
        workers.join()
        ends = [workers.end(i).status for i in range(2)]
    assert ends == [WorkerStatus.HUNG, WorkerStatus.DONE]


def test_a_worker_that_never_starts_is_hung_after_the_startup_limit():
    with group(targets.slow_start, startup_s=1.0) as workers:
        list(workers.messages(until=Never))
        end = workers.end(0)
    assert end.status is WorkerStatus.HUNG and not end.started
    assert "did not start within 1 s" in end.error


@pytest.mark.slow
def test_the_overall_limit_applies_even_while_a_worker_keeps_talking():
    with group(targets.stall, stall_s=30.0, limit_s=1.0) as workers:
        list(workers.messages(until=Never))
        assert workers.end(0).status is WorkerStatus.HUNG
        assert "still running after the limit of 1 s" in workers.end(0).error


def test_a_worker_exits_when_its_parent_dies(tmp_path):
    parent = textwrap.dedent(
        """
        import sys, time
        from harness.workers import WorkerGroup
        from tests.worker_targets import Pid, report_pid_then_wait
        if __name__ == "__main__":
            with WorkerGroup(report_pid_then_wait, [{}], startup_s=60, stall_s=60, limit_s=60) as g:
                for _, m in g.messages(until=Pid):
                    print(m.pid, flush=True)
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
    while time.monotonic() < deadline and alive(worker_pid):
        time.sleep(0.1)
    assert not alive(worker_pid)


@pytest.mark.parametrize("limit", ["startup_s", "stall_s", "limit_s"])
def test_limits_are_checked_per_group_not_per_message(limit):
    # A worker that finishes quickly is never reported hung, whatever the limits.
    with group(targets.echo, jobs=[{"value": 1}], **{limit: 30.0}) as workers:
        list(workers.messages(until=Value))
        workers.send(0, Command(0))
        list(workers.messages(until=Reply))
        workers.join()
        assert workers.end(0).status is WorkerStatus.DONE
