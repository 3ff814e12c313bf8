"""``spare_port``: free now, outside the kernel's ephemeral range (where client sockets land),
and never handed out twice lately by this process (a plan asks for all its ports before any is
bound)."""

from __future__ import annotations

import random
import socket

import pytest
from sipsec.aio import ports
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


class _Always(random.Random):
    """An rng that picks the same number every time: the worst case of a random plan."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self.port = port

    def randint(self, a: int, b: int) -> int:
        return self.port


def _a_number_free_on(*hosts: str) -> int:
    low, _ = ephemeral_range()
    for port in range(low - 1, 10000, -1):
        if all(ports._free(h, port, socket.SOCK_STREAM) and (h, port) not in ports._handed for h in hosts):
            return port
    raise AssertionError("no free port below the ephemeral range")


def test_the_same_number_is_not_handed_out_twice_before_it_is_bound() -> None:
    number = _a_number_free_on("127.0.0.1")
    first = spare_port("127.0.0.1", rng=_Always(number))
    second = spare_port("127.0.0.1", rng=_Always(number))  # still free: nothing bound it yet
    assert first == number
    assert second != first


def test_another_address_may_have_the_same_number() -> None:
    number = _a_number_free_on("127.0.0.3", "127.0.0.4")
    assert spare_port("127.0.0.3", rng=_Always(number)) == number
    assert spare_port("127.0.0.4", rng=_Always(number)) == number
