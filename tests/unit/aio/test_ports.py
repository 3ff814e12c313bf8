"""``spare_port``: free now, outside the kernel's ephemeral range (where client sockets land)."""

from __future__ import annotations

import random
import socket

import pytest
from sipsec.aio.ports import ephemeral_range, spare_port


@pytest.mark.parametrize("tcp,udp", [(True, False), (False, True), (True, True)])
def test_a_spare_port_is_free_for_what_was_asked_and_below_the_ephemeral_range(tcp: bool, udp: bool) -> None:
    low, _ = ephemeral_range()
    port = spare_port("127.0.0.1", tcp=tcp, udp=udp)
    assert 1024 <= port < low
    for kind, on in ((socket.SOCK_STREAM, tcp), (socket.SOCK_DGRAM, udp)):
        if on:
            with socket.socket(socket.AF_INET, kind) as s:
                s.bind(("127.0.0.1", port))


def test_a_busy_port_is_never_returned() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", spare_port()))
        taken = busy.getsockname()[1]
        seed = random.Random(7)
        # replay the same random sequence with the busy port forced first
        picks = iter([taken] + [seed.randint(10000, 20000) for _ in range(50)])

        class Forced(random.Random):
            def randint(self, a: int, b: int) -> int:
                return next(picks)

        assert spare_port("127.0.0.1", rng=Forced()) != taken


def test_asking_for_no_protocol_is_an_error() -> None:
    with pytest.raises(ValueError):
        spare_port(tcp=False, udp=False)
