"""sipsec.lifecycle: the event loop every service runs on (SIPSEC_EVENT_LOOP) and its run()."""

from __future__ import annotations

import asyncio

import pytest
import uvloop
from sipsec import lifecycle


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_auto_runs_on_uvloop_when_installed_and_asyncio_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIPSEC_EVENT_LOOP", raising=False)
    assert lifecycle.run(_loop_type()) is uvloop.Loop  # auto, the default
    assert lifecycle.run(_loop_type(), loop="uvloop") is uvloop.Loop
    assert not issubclass(lifecycle.run(_loop_type(), loop="asyncio"), uvloop.Loop)
    monkeypatch.setenv("SIPSEC_EVENT_LOOP", " AsyncIO ")
    assert lifecycle.event_loop_factory() is None
    assert not issubclass(lifecycle.run(_loop_type()), uvloop.Loop)


def test_run_returns_the_result_and_raises_the_coroutines_error() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    async def fail() -> None:
        raise LookupError("inside")

    assert lifecycle.run(answer()) == 42
    with pytest.raises(LookupError, match="inside"):
        lifecycle.run(fail())


def test_an_unknown_or_missing_loop_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIPSEC_EVENT_LOOP", "trio")
    coro = _loop_type()
    with pytest.raises(ValueError, match="SIPSEC_EVENT_LOOP must be one of auto, uvloop, asyncio"):
        lifecycle.run(coro)
    assert coro.cr_frame is None  # closed, never started
    monkeypatch.setenv("SIPSEC_EVENT_LOOP", "uvloop")
    monkeypatch.setitem(__import__("sys").modules, "uvloop", None)  # as if not installed
    with pytest.raises(RuntimeError, match="uvloop is not installed"):
        lifecycle.event_loop_factory()
    monkeypatch.setenv("SIPSEC_EVENT_LOOP", "auto")
    assert lifecycle.event_loop_factory() is None  # auto falls back to asyncio's loop
