"""Load profiles: how many calls a generator should have started by time ``t``, or how many to hold.

``constant`` (``rate`` calls/s for ``duration_s``), ``ramp`` (``rate`` → ``rate_to`` linearly),
``step`` (``rate``, then ``+step`` every ``step_s`` up to ``rate_to``), and ``hold`` (keep
``concurrent`` calls held, each ``hold_s`` long, new ones started at ``rate`` calls/s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

__all__ = ["KINDS", "Profile", "ProfileError"]

KINDS = ("constant", "ramp", "step", "hold")


class ProfileError(ValueError):
    """A profile whose parameters do not make sense (the message says which)."""


@dataclass(frozen=True)
class Profile:
    kind: str = "constant"
    rate: float = 10.0
    duration_s: float = 10.0
    rate_to: float = 0.0
    step: float = 0.0
    step_s: float = 5.0
    concurrent: int = 0
    hold_s: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ProfileError(f"profile {self.kind!r}: one of {', '.join(KINDS)}")
        if self.rate <= 0 or self.duration_s <= 0 or self.hold_s < 0:
            raise ProfileError("rate and duration must be positive, the hold time not negative")
        if self.kind in ("ramp", "step") and self.rate_to <= 0:
            raise ProfileError(f"the {self.kind} profile needs --rate-to")
        if self.kind == "step" and (self.step <= 0 or self.step_s <= 0):
            raise ProfileError("the step profile needs a positive --step and --step-s")
        if self.kind == "hold" and self.concurrent < 1:
            raise ProfileError("the hold profile needs --concurrent ≥ 1")

    def rate_at(self, t: float) -> float:
        """The offered rate (calls/s) at ``t`` seconds into the run."""
        if t < 0 or t >= self.duration_s:
            return 0.0
        if self.kind == "ramp":
            return self.rate + (self.rate_to - self.rate) * t / self.duration_s
        if self.kind == "step":
            return min(self.rate + self.step * math.floor(t / self.step_s), max(self.rate, self.rate_to))
        return self.rate

    def due(self, t: float) -> int:
        """Calls the profile has offered by ``t`` (the integral of :meth:`rate_at`)."""
        t = min(max(t, 0.0), self.duration_s)
        if self.kind == "ramp":
            return int(self.rate * t + (self.rate_to - self.rate) * t * t / (2 * self.duration_s))
        if self.kind == "step":
            total, start = 0.0, 0.0
            while start < t:
                end = min(t, (math.floor(start / self.step_s) + 1) * self.step_s)
                total += self.rate_at(start) * (end - start)
                start = end
            return int(total)
        return int(self.rate * t)

    def share(self, index: int, procs: int) -> Profile:
        """This profile's part for generator ``index`` of ``procs`` (rates and concurrency split evenly)."""
        if procs == 1:
            return self
        part = 1.0 / procs
        concurrent = self.concurrent // procs + (1 if index < self.concurrent % procs else 0)
        return replace(self, rate=self.rate * part, rate_to=self.rate_to * part, step=self.step * part,
                       concurrent=concurrent)
