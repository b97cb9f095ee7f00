"""The training test's vote, a pure function: who disagrees, at which step, in which layer."""

import math
import struct

from gputests.work import train_vote
from gputests.work.train_vote import CLEARED, FLAKY, TIED, Print, break_tie, progressed, vote

NAMES = ("embed", "layers.0", "layers.1", "head")
H100 = ("cuda", "NVIDIA H100 80GB HBM3", 132, "9.0")
A100 = ("cuda", "NVIDIA A100-SXM4-80GB", 108, "8.0")


def bits(value: float) -> int:
    return struct.unpack("<I", struct.pack("<f", value))[0]


def step(n: int, *, loss: float | None = None, group: int | None = None) -> Print:
    """The n-th step of a healthy run, or one whose loss or one group's checksum differs."""
    groups = [1000 * n + g for g in range(len(NAMES))]
    if group is not None:
        groups[group] += 1
    return Print(loss_bits=bits(loss if loss is not None else 4.0 / n), grad_norm_bits=bits(1.0), groups=tuple(groups))


def run(steps: int, **wrong: tuple[int, int]) -> list[Print]:
    """`steps` steps; with `group=(k, g)`, group g differs from step k on (training has diverged)."""
    at, group = wrong.get("group", (steps + 1, 0))
    return [step(n, group=group if n >= at else None) for n in range(1, steps + 1)]


def test_devices_that_agree_at_every_step_are_compared_at_every_step():
    tally = vote({0: H100, 1: H100, 2: H100}, {0: run(6), 1: run(6), 2: run(6)}, NAMES)
    assert tally.disagreements == [] and tally.compared == {0: 6, 1: 6, 2: 6}


def test_the_majority_names_the_device_the_step_and_the_first_layer_that_differ():
    tally = vote({0: H100, 1: H100, 2: H100}, {0: run(6), 1: run(6, group=(4, 2)), 2: run(6)}, NAMES)
    [d] = tally.disagreements
    assert (d.suspect, d.step, d.group, d.majority, d.voters, d.reference) == (1, 4, "layers.1", True, 3, 0)
    assert d.parts == ("parameters",)
    assert tally.compared == {0: 6, 1: 4, 2: 6}  # the suspect leaves the vote; the others go on


def test_two_devices_that_disagree_have_no_majority_and_both_are_named():
    tally = vote({0: H100, 1: H100}, {0: run(5), 1: run(5, group=(2, 0))}, NAMES)
    assert [(d.suspect, d.reference, d.step, d.majority, d.group) for d in tally.disagreements] == [
        (0, 1, 2, False, "embed"),
        (1, 0, 2, False, "embed"),
    ]


def test_a_tie_of_two_against_two_names_all_four():
    prints = {0: run(3), 1: run(3), 2: run(3, group=(1, 3)), 3: run(3, group=(1, 3))}
    tally = vote(dict.fromkeys(prints, H100), prints, NAMES)
    assert sorted(d.suspect for d in tally.disagreements) == [0, 1, 2, 3]
    assert not any(d.majority for d in tally.disagreements)


def test_only_devices_of_one_model_are_compared():
    tally = vote({0: H100, 1: A100}, {0: run(4), 1: run(4, group=(1, 1))}, NAMES)
    assert tally.disagreements == [] and tally.compared == {0: 0, 1: 0}


def test_devices_are_compared_up_to_the_steps_all_of_them_reached():
    short = run(3)
    tally = vote({0: H100, 1: H100}, {0: short, 1: run(8, group=(5, 1))}, NAMES)
    assert tally.disagreements == [] and tally.compared == {0: 3, 1: 3}


def test_a_device_that_reported_nothing_is_left_out_of_the_vote():
    tally = vote({0: H100, 1: H100, 2: H100}, {0: run(4), 1: [], 2: run(4)}, NAMES)
    assert tally.disagreements == [] and tally.compared == {0: 4, 1: 0, 2: 4}


def test_a_loss_that_differs_alone_is_named_with_the_parameters_agreeing():
    a, b = step(1), step(1, loss=3.0)
    assert a.differs_from(b, NAMES) == (["loss"], "")
    assert step(2, group=3).differs_from(step(2), NAMES) == (["parameters"], "head")


def test_the_checksum_wraps_to_64_bits_and_one_flipped_bit_changes_it():
    big = Print(loss_bits=0, grad_norm_bits=0, groups=(2**63 - 1, 2**63 - 1, 5))
    assert big.checksum == (2 * (2**63 - 1) + 5) % 2**64
    flipped = Print(loss_bits=0, grad_norm_bits=0, groups=(2**63 - 1, 2**63 - 1 ^ 1 << 40, 5))
    assert flipped.checksum != big.checksum
    assert step(1).hex() == f"{bits(4.0):08x}:{bits(1.0):08x}:{step(1).checksum:016x}"


def test_the_digest_of_equal_runs_is_equal_and_of_different_runs_differs():
    assert train_vote.digest(run(4)) == train_vote.digest(run(4))
    assert train_vote.digest(run(4)) != train_vote.digest(run(4, group=(4, 0)))


def test_a_replay_that_differs_from_the_first_run_breaks_the_tie():
    prints = {0: run(4), 1: run(4, group=(2, 1))}
    assert break_tie([0, 1], 2, prints, {0: step(2), 1: step(2)}) == {0: CLEARED, 1: FLAKY}


def test_replays_that_repeat_both_first_runs_leave_the_tie():
    prints = {0: run(4), 1: run(4, group=(2, 1))}
    assert break_tie([0, 1], 2, prints, {0: step(2), 1: step(2, group=1)}) == {0: TIED, 1: TIED}


def test_a_missing_replay_leaves_the_tie():
    prints = {0: run(4), 1: run(4, group=(2, 1))}
    assert break_tie([0, 1], 2, prints, {0: step(2), 1: None}) == {0: TIED, 1: TIED}


def test_of_three_tied_the_flaky_one_is_named_and_the_two_others_still_disagree():
    prints = {0: run(3), 1: run(3, group=(1, 1)), 2: run(3, group=(1, 2))}
    replays = {0: step(1), 1: step(1, group=1), 2: step(1)}
    assert break_tie([0, 1, 2], 1, prints, replays) == {0: TIED, 1: TIED, 2: FLAKY}


def test_training_progresses_when_the_loss_is_finite_and_falls():
    ok, why = progressed(run(8))
    assert ok and "fell from" in why


def test_a_loss_that_is_not_finite_is_not_progress():
    prints = run(8)
    prints[5] = step(6, loss=math.nan)
    assert progressed(prints) == (False, "the loss is nan at step 6 of 8")
    prints[5] = step(6, loss=math.inf)
    assert progressed(prints)[0] is False


def test_a_loss_that_does_not_fall_is_not_progress():
    rising = [step(n, loss=float(n)) for n in range(1, 9)]
    ok, why = progressed(rising)
    assert not ok and "did not fall over 8 steps" in why
    flat = [step(n, loss=2.0) for n in range(1, 9)]
    assert progressed(flat)[0] is False


def test_one_step_or_none_cannot_show_progress():
    assert progressed([step(1)])[0] is False
    assert progressed([]) == (False, "no step was reported")
