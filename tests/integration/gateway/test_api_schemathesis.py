"""Schemathesis against the control API's own OpenAPI document, over real HTTP (uvicorn on port 0)
in front of a real two-domain set-up (PKG, location, proxy, gateway per domain).

Without credentials every operation answers 401 with a JSON error and ``WWW-Authenticate:
Bearer``, whatever the generated request holds (valid or not: positive and negative data); with
a token of every scope no operation answers 5xx, and every error is JSON.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from sipsec_gateway.api import ApiTokens, create_app

from tests.integration.gateway.harness import TwoDomains

EXAMPLES = 20  # per operation and generation mode (a shared 2-core box)


class _Background:
    """An event loop in a thread of its own: the services run there, the sync test talks HTTP."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="api-fuzz-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # not the main thread: no signal handling
        pass


@pytest.fixture(scope="module")
def api() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(base URL, a token of every scope, the OpenAPI document) of atlanta.com's gateway."""
    bg = _Background()
    net = TwoDomains()
    bg.run(net.__aenter__())
    tokens = ApiTokens()
    token = tokens.issue("fuzz")
    app = create_app(net.atlanta.gateway, tokens)
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))

    async def start() -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        return task

    task = bg.run(start())
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", token, app.openapi()
    finally:
        server.should_exit = True

        async def stop() -> None:
            await task
            await net.__aexit__(None, None, None)

        bg.run(stop())
        bg.close()


def _each_case(spec: dict[str, Any], check: Callable[[Any], None]) -> list[str]:
    """Run ``check`` on generated cases of every operation, positive and negative data."""
    schema = schemathesis.openapi.from_dict(spec)
    seen: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        seen.append(f"{operation.method.upper()} {operation.path}")
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            def run(case: Any) -> None:
                check(case)

            try:
                run()
            except Unsatisfiable:
                # no invalid request exists for an operation without parameters or body
                assert mode is GenerationMode.NEGATIVE and not _has_inputs(operation), seen[-1]
    return seen


def _has_inputs(operation: Any) -> bool:
    raw = operation.definition.raw
    return bool(raw.get("parameters") or raw.get("requestBody"))


def _json_error(response: Any, status: int) -> dict[str, Any]:
    assert response.headers.get("content-type", [""])[0].startswith("application/json"), response.text
    error = response.json()["error"]
    assert error["status"] == status and error["message"], response.text
    return dict(error)


def test_every_operation_without_credentials_answers_401_json(api: tuple[str, str, dict[str, Any]]) -> None:
    base, _, spec = api

    def check(case: Any) -> None:
        response = case.call(base_url=base)  # no token (or a random one schemathesis made up)
        detail = f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:200]}"
        if case.operation.path in ("/healthz", "/livez"):
            assert response.status_code == 200 and response.json() == {"status": "ok", "domain": "atlanta.com"}, detail
            return
        if case.operation.path == "/readyz":  # unauthenticated too: check names and counts, never users
            doc = response.json()
            assert response.status_code == (200 if not doc["failing"] else 503), detail
            assert set(doc["checks"]) == {"sip", "store", "pkg", "users"} and "@" not in response.text, detail
            return
        assert response.status_code == 401, detail
        _json_error(response, 401)
        assert response.headers["www-authenticate"][0].startswith("Bearer"), detail

    seen = _each_case(spec, check)
    assert {"POST /v1/users", "DELETE /v1/users/{aor}", "POST /v1/calls", "DELETE /v1/calls/{call_id}",
            "GET /v1/calls/{call_id}/wire", "GET /v1/users", "GET /v1/calls", "GET /v1/calls/{call_id}"} <= set(seen)


def test_every_operation_with_credentials_answers_no_5xx_and_json_errors(
        api: tuple[str, str, dict[str, Any]]) -> None:
    base, token, spec = api
    statuses: set[int] = set()

    def check(case: Any) -> None:
        # the token always (negative data may have mutated the security scheme's header away)
        case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        case.headers["Authorization"] = f"Bearer {token}"
        response = case.call(base_url=base)
        detail = f"{case.method} {case.formatted_path} {case.body!r:.200}: {response.status_code} {response.text[:300]}"
        assert response.status_code < 500, detail
        statuses.add(response.status_code)
        if response.status_code == 204:
            return
        assert response.headers.get("content-type", [""])[0].startswith("application/json"), detail
        if response.status_code >= 400:
            error = _json_error(response, response.status_code)
            # 401/403 here are the PKG refusing a password or a policy refusing a call, never the token
            assert error.get("reason") not in ("missing", "invalid", "scope"), detail

    _each_case(spec, check)
    assert {400, 404, 422} & statuses  # the generated requests did reach the operations
