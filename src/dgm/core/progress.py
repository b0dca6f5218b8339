"""Progress of long phases on stderr, and the deadline of a time budget.

:class:`Progress` reports one phase (training, scoring a split, drawing samples, a metric): on a
terminal a tqdm bar, otherwise (a log file, a pipe, a notebook) one line when the phase starts,
one line every ``interval`` seconds (10 by default) while it runs, and one when a phase that
printed progress ends. A heartbeat thread keeps the lines (and the bar's clock) coming while a
single long call (one ``model.sample``) gives no chance to report, so no phase is silent for
longer than about ``interval`` seconds. ``enabled=False`` (``--no-progress``) prints nothing.

:class:`Deadline` is a point on a clock after which no new work should start (the end of a
``max_minutes`` budget); its clock can be a fake one in tests. Work that is one long call (a
sampler of a thousand network passes, an adaptive ODE solve) is stopped inside the call by
:meth:`Deadline.enforced`: within it, the first network pass (the forward of any ``nn.Module``)
after the deadline raises :class:`TimeUp`.

>>> import io
>>> clock = iter([0.0, 4.0, 12.0, 13.0]).__next__
>>> out = io.StringIO()
>>> with Progress("scoring", 30, unit="examples", stream=out, clock=clock) as p:
...     p.update(10)  # 4 s: no line yet
...     p.update(10)  # 12 s: a line
>>> print(out.getvalue(), end="")
dgm: scoring: 0/30 examples
dgm: scoring: 20/30 examples (67%), 12 s
dgm: scoring: 20/30 examples in 13 s
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import torch
from tqdm import tqdm

__all__ = ["Deadline", "Progress", "INTERVAL", "TimeUp"]

#: seconds between two progress lines when stderr is not a terminal
INTERVAL = 10.0
#: how often the heartbeat thread looks at a running phase (seconds of real time)
_HEARTBEAT = 1.0


class TimeUp(Exception):
    """The deadline passed during a call run under :meth:`Deadline.enforced`."""


class Deadline:
    """A point ``at`` on ``clock`` (``None``: no limit) after which no new work starts."""

    def __init__(self, at: float | None = None, clock: Callable[[], float] = time.perf_counter):
        self.at = at
        self.clock = clock

    @classmethod
    def after(
        cls, seconds: float | None, clock: Callable[[], float] = time.perf_counter
    ) -> Deadline:
        """The deadline ``seconds`` from now (``None``: no limit)."""
        return cls(None if seconds is None else clock() + seconds, clock)

    def left(self) -> float:
        """Seconds left (``inf`` without a limit; negative once passed)."""
        return math.inf if self.at is None else self.at - self.clock()

    def passed(self) -> bool:
        return self.at is not None and self.clock() >= self.at

    def share(self, fraction: float) -> Deadline:
        """A deadline ``fraction`` of the time left from now (the same one without a limit)."""
        if self.at is None:
            return self
        now = self.clock()
        return Deadline(now + fraction * max(0.0, self.at - now), self.clock)

    @contextmanager
    def enforced(self) -> Iterator[None]:
        """Within the block, the first forward of any ``nn.Module`` after the deadline raises
        :class:`TimeUp`: every sampler and likelihood computes through network passes, so one long
        call stops within one pass of the deadline instead of running to its end. Nothing is
        hooked without a limit. (A global forward pre-hook; removed when the block ends.)"""
        if self.at is None:
            yield
            return

        def check(module: torch.nn.Module, args: Any) -> None:
            if self.clock() >= self.at:
                raise TimeUp(f"the deadline passed during a call to {type(module).__name__}")

        handle = torch.nn.modules.module.register_module_forward_pre_hook(check)
        try:
            yield
        finally:
            handle.remove()


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


class Progress:
    """The progress of one phase named ``what``, out of ``total`` ``unit`` (``None``: unknown).

    Use it as a context manager; :meth:`update` advances it and sets a short status
    (``loss=1.23``); :meth:`note` prints a line whatever the time (a fact the user should know,
    e.g. that a subset is scored). ``bar`` (default: ``stream.isatty()``) chooses the tqdm bar.
    ``after`` > 0 makes a phase that is usually quick (loading data, building a model) silent
    unless it lasts that many seconds: its first line comes then, with no bar. ``clock`` is for
    tests; the heartbeat thread runs only on the real clock.
    """

    def __init__(
        self,
        what: str,
        total: float | None = None,
        *,
        unit: str = "",
        enabled: bool = True,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.perf_counter,
        interval: float = INTERVAL,
        bar: bool | None = None,
        initial: float = 0,
        after: float = 0.0,
    ) -> None:
        self.what, self.unit, self.enabled = what, unit, enabled
        self.total = None if total is None or math.isinf(total) else total
        self.stream = sys.stderr if stream is None else stream
        self.clock, self.interval = clock, interval
        self.n = initial
        self.status = ""
        self.lines = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar: Any = None
        if not enabled:
            return
        self.t0 = self._last = clock()
        self.after = after
        isatty = getattr(self.stream, "isatty", lambda: False)
        if after > 0:
            pass  # the heartbeat prints the first line once `after` seconds have passed
        elif bar if bar is not None else isatty():
            self._bar = tqdm(
                total=self.total, initial=initial, desc=f"dgm: {what}", unit=unit or "it",
                file=self.stream, dynamic_ncols=True, leave=False,
            )  # fmt: skip
        else:
            self._line(self._count() or "started")
        if clock is time.perf_counter:
            self._thread = threading.Thread(target=self._beat, daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ reporting
    def _count(self) -> str:
        """``12/30 examples``, ``12 steps``, or nothing (a phase with neither total nor unit)."""
        unit = f" {self.unit}" if self.unit else ""
        if self.total is None:
            return f"{self.n:g}{unit}" if unit else ""
        return f"{self.n:g}/{self.total:g}{unit}"

    def _line(self, text: str) -> None:
        print(f"dgm: {self.what}: {text}", file=self.stream, flush=True)
        self.lines += 1

    def _poll(self) -> None:
        """A line when ``interval`` seconds have passed since the last one (call with the lock)."""
        now = self.clock()
        if self.lines == 0 and self.after > 0:
            if now - self.t0 < self.after:
                return
        elif now - self._last < self.interval:
            return
        self._last = now
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        parts = [self._count() + pct, _seconds(now - self.t0), self.status]
        self._line(", ".join(p for p in parts if p))

    def _beat(self) -> None:
        while not self._stop.wait(_HEARTBEAT):
            with self._lock:
                if self._bar is not None:
                    self._bar.refresh()
                else:
                    self._poll()

    def update(self, n: float = 1, **status: Any) -> None:
        """Advance by ``n`` and set the status shown beside the count (``loss=...``)."""
        if not self.enabled:
            return
        with self._lock:
            self.n += n
            if status:
                self.status = ", ".join(f"{k} {v}" for k, v in status.items())
            if self._bar is not None:
                self._bar.update(n)
                if status:
                    self._bar.set_postfix(status, refresh=False)
            else:
                self._poll()

    def note(self, text: str) -> None:
        """Print ``text`` now (on a terminal, above the bar)."""
        if not self.enabled:
            return
        with self._lock:
            if self._bar is not None:
                self._bar.write(f"dgm: {self.what}: {text}", file=self.stream)
            else:  # not a progress line: a quick phase with a note still ends quietly
                print(f"dgm: {self.what}: {text}", file=self.stream, flush=True)

    def close(self) -> None:
        """End the phase; a phase that printed progress lines says how long it took."""
        if not self.enabled or self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if self._bar is not None:
                self._bar.close()
            elif self.lines > 1:
                took = _seconds(self.clock() - self.t0)
                self._line(f"{self._count()} in {took}" if self._count() else f"done in {took}")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
