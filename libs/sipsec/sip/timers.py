"""RFC 3261 §17 / RFC 6026 transaction timer values (A–M) derived from T1, T2 and T4,
and Timer C (§16.6 step 11, §9.1), the bound on an INVITE client left in Proceeding."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

__all__ = ["DEFAULT_TIMERS", "Timer", "TimerSettings"]


class Timer(IntEnum):
    """Transaction timers, RFC 3261 Table 4 plus RFC 6026 §8.2 (L) and §8.4 (M)."""

    A = 0  # INVITE request retransmit interval, UDP only (§17.1.1.2): initially T1, doubles
    B = 1  # INVITE transaction timeout (§17.1.1.2): 64*T1
    D = 2  # wait time for response retransmits (§17.1.1.2): >32 s UDP, 0 reliable
    E = 3  # non-INVITE request retransmit interval, UDP only (§17.1.2.2): T1, min(2E, T2)
    F = 4  # non-INVITE transaction timeout (§17.1.2.2): 64*T1
    G = 5  # INVITE response retransmit interval (§17.2.1): T1, min(2G, T2), UDP only
    H = 6  # wait time for ACK receipt (§17.2.1): 64*T1
    I = 7  # wait time for ACK retransmits (§17.2.1): T4 UDP, 0 reliable  # noqa: E741
    J = 8  # wait time for non-INVITE request retransmits (§17.2.2): 64*T1 UDP, 0 reliable
    K = 9  # wait time for response retransmits (§17.1.2.2): T4 UDP, 0 reliable
    L = 10  # wait time for accepted INVITE request retransmits (RFC 6026 §8.7): 64*T1
    M = 11  # wait time for retransmission of 2xx to INVITE (RFC 6026 §8.4): 64*T1
    C = 12  # INVITE client in Proceeding without a final response (§16.6 step 11, §9.1)


@dataclass(frozen=True, slots=True)
class TimerSettings:
    """T1 (RTT estimate), T2 (max non-INVITE retransmit interval), T4 (max network lifetime).

    Defaults are RFC 3261 §17.1.1.1: T1 = 500 ms, T2 = 4 s, T4 = 5 s. Timer D is
    "at least 32 s" for unreliable transports; it is kept as its own knob.

    ``timer_c`` bounds an INVITE client transaction that got a provisional response and
    then nothing (Figure 5 gives Proceeding no timer): it is (re)started by every
    provisional response; when it fires the TU is told (cancel, §9.1; treat as 408,
    §16.8) and the transaction is destroyed 64*T1 later unless a final response comes
    (§9.1). RFC 3261 §16.6 step 11 asks a proxy's Timer C to be over 3 minutes; the
    default (4 minutes) leaves a TU's own Timer C the first word.
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_d_unreliable: float = 32.0
    timer_c: float = 240.0

    def __post_init__(self) -> None:
        if not (0 < self.t1 <= self.t2) or self.t4 <= 0 or self.timer_d_unreliable < 0:
            raise ValueError("timer settings need 0 < T1 <= T2 and T4 > 0")
        if self.timer_c <= 0:
            raise ValueError("timer settings need Timer C > 0")

    def initial_interval(self, timer: Timer) -> float:
        """First interval of a retransmission timer (A, E or G): T1."""
        if timer not in (Timer.A, Timer.E, Timer.G):
            raise ValueError(f"timer {timer.name} is not a retransmission timer")
        return self.t1

    def duration(self, timer: Timer, reliable: bool) -> float:
        """Duration of a one-shot timer (B, C, D, F, H, I, J, K, L, M) for the transport kind."""
        t1 = self.t1
        if timer is Timer.C:
            return self.timer_c
        if timer in (Timer.B, Timer.F, Timer.H, Timer.L, Timer.M):
            return 64 * t1
        if timer is Timer.D:
            return 0.0 if reliable else self.timer_d_unreliable
        if timer is Timer.J:
            return 0.0 if reliable else 64 * t1
        if timer in (Timer.I, Timer.K):
            return 0.0 if reliable else self.t4
        raise ValueError(f"timer {timer.name} is a retransmission timer")


DEFAULT_TIMERS = TimerSettings()
