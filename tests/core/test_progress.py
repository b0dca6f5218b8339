"""Progress of long phases: a line every ``interval`` seconds off a terminal, a bar on one, silence
when disabled; and the deadline of a time budget. Every clock here is a fake one."""

from __future__ import annotations

import doctest
import io

import pytest
import torch

import dgm.core.progress
from dgm.core.progress import Deadline, Progress, TimeUp


class Clock:
    """Moves only when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_docstring_example_runs():
    failures, tried = doctest.testmod(dgm.core.progress)
    assert tried > 0 and failures == 0


def test_a_line_at_the_start_then_one_every_interval_and_one_at_the_end():
    clock, out = Clock(), io.StringIO()
    with Progress("scoring", 100, unit="examples", stream=out, clock=clock) as p:
        for _ in range(10):  # 10 batches of 10 examples, 3 s each: 30 s
            clock.now += 3.0
            p.update(10, loss="1.5")
    lines = out.getvalue().splitlines()
    assert lines == [
        "dgm: scoring: 0/100 examples",
        "dgm: scoring: 40/100 examples (40%), 12 s, loss 1.5",
        "dgm: scoring: 80/100 examples (80%), 24 s, loss 1.5",
        "dgm: scoring: 100/100 examples in 30 s",
    ]


def test_a_quick_phase_prints_only_its_start_and_a_disabled_one_nothing():
    clock, out = Clock(), io.StringIO()
    with Progress("drawing samples", stream=out, clock=clock) as p:
        clock.now += 2.0
        p.update(1)
    assert out.getvalue().splitlines() == ["dgm: drawing samples: started"]
    out = io.StringIO()
    with Progress("scoring", 10, stream=out, clock=clock, enabled=False) as p:
        clock.now += 100.0
        p.update(10)
        p.note("a subset")
    assert out.getvalue() == ""


def test_a_note_is_printed_whatever_the_time():
    clock, out = Clock(), io.StringIO()
    with Progress("scoring the test split", 5, stream=out, clock=clock) as p:
        p.note("the first 5 of 9 examples")
    assert (
        out.getvalue().splitlines()[-1] == "dgm: scoring the test split: the first 5 of 9 examples"
    )


def test_on_a_terminal_a_bar_instead_of_lines():
    clock, out = Clock(), io.StringIO()
    with Progress("training made", 50, unit="steps", stream=out, clock=clock, bar=True) as p:
        for _ in range(50):
            clock.now += 1.0
            p.update(1)
    text = out.getvalue()
    assert "dgm: training made" in text and "0/50" in text and "steps" in text
    assert "%), " not in text and "in 50 s" not in text  # no progress lines


def test_an_unknown_total_counts_without_a_percentage():
    clock, out = Clock(), io.StringIO()
    with Progress("training", None, unit="steps", stream=out, clock=clock) as p:
        for _ in range(3):
            clock.now += 5.0
            p.update(2)
    assert out.getvalue().splitlines() == [
        "dgm: training: 0 steps",
        "dgm: training: 4 steps, 10 s",
        "dgm: training: 6 steps in 15 s",
    ]


def test_deadline_passes_and_shares_what_is_left():
    clock = Clock()
    d = Deadline(60.0, clock)
    assert not d.passed() and d.left() == 60.0
    clock.now = 20.0
    half = d.share(0.5)
    assert half.at == pytest.approx(40.0) and half.clock is clock
    clock.now = 60.0
    assert d.passed() and half.passed() and d.share(0.5).at == pytest.approx(60.0)
    never = Deadline(None, clock)
    assert not never.passed() and never.left() == float("inf") and never.share(0.5) is never
    assert Deadline.after(5.0, clock).at == pytest.approx(65.0)


def test_an_enforced_deadline_stops_one_long_call_at_its_next_network_pass():
    """A sampler is one long call: under ``enforced`` the first module forward after the deadline
    raises TimeUp (the clock here moves one second per network pass)."""
    net = torch.nn.Sequential(torch.nn.Linear(2, 2))  # two modules: two passes per call
    now = [0.0]

    def clock():
        return now[0]

    def long_sampler(steps):
        x = torch.zeros(1, 2)
        for _ in range(steps):
            now[0] += 1.0
            x = net(x)
        return x

    deadline = Deadline(at=10.0, clock=clock)
    with pytest.raises(TimeUp), deadline.enforced():
        long_sampler(1000)
    assert now[0] == 10.0  # stopped at the first pass at or after the deadline, not after 1000
    # outside the block, and without a limit, nothing is hooked
    assert long_sampler(5).shape == (1, 2)
    with Deadline(None, clock).enforced():
        long_sampler(5)
    assert now[0] == 20.0


def test_a_phase_with_after_is_silent_when_quick_and_speaks_when_slow():
    now = [0.0]
    out = io.StringIO()
    with Progress("loading data x", stream=out, clock=lambda: now[0], after=3.0) as p:
        now[0] = 2.0
        p.update(0)
    assert out.getvalue() == ""  # quick: nothing, not even an end line
    with Progress("building m", stream=out, clock=lambda: now[0], after=3.0) as p:
        now[0] = 6.0
        p.update(0)  # 4 s in: the first line
        now[0] = 10.0
        p.update(0)  # 4 s later: no line (the interval is 10 s)
        now[0] = 16.5
        p.update(0)
    assert out.getvalue().splitlines() == [
        "dgm: building m: 4 s",
        "dgm: building m: 14 s",
        "dgm: building m: done in 14 s",
    ]
