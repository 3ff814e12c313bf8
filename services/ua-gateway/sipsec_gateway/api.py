"""The control API of the gateway (FastAPI; the OpenAPI document is served at /openapi.json).

Users: ``POST /v1/users`` (log in with PKG credentials; policy, auto-answer, hold time),
``GET /v1/users``, ``DELETE /v1/users/{aor}``. Calls: ``GET /v1/calls`` (recent, this
replica), ``POST /v1/calls`` (from, to,
secure), ``GET /v1/calls/{id}`` (state and cost: crypto time per operation, setup time,
bytes on the wire), ``GET /v1/calls/{id}/wire`` (outer and inner messages),
``DELETE /v1/calls/{id}`` (hang up). ``GET /healthz``, ``GET /metrics``.
Errors are JSON ``{"error": {"status": ..., "message": ...}}`` with the HTTP status.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from sipsec_gateway.calls import CallState
from sipsec_gateway.gateway import Gateway, GatewayError

__all__ = ["CallRequest", "LoginRequest", "create_app"]


class LoginRequest(BaseModel):
    aor: str = Field(description="the user's SIP address of record, e.g. sip:alice@atlanta.com")
    password: str = Field(description="the user's PKG password", repr=False)
    policy: str | None = Field(None, description="secure-only (default) | prefer-secure | plain")
    auto_answer: bool = Field(False, description="answer incoming calls at once (callee users)")
    hold_s: float | None = Field(None, ge=0, description="with auto_answer: hang up this long after answering")
    phone_password: str | None = Field(None, repr=False, description="require Digest with this password from "
                                       "the user's plain phone (REGISTER 401, INVITE 407)")


class CallRequest(BaseModel):
    from_: str = Field(alias="from", description="the calling user (logged in here)")
    to: str = Field(description="the callee's SIP address of record")
    secure: bool | None = Field(None, description="secure the call (default: per the caller's policy)")
    wait: bool = Field(True, description="answer after the call is set up (or failed)")
    timeout_s: float | None = Field(None, gt=0, le=300, description="longest wait for the final response")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message}}, status_code=status)


def create_app(gateway: Gateway) -> FastAPI:
    """The FastAPI application controlling ``gateway`` (which the caller starts and stops)."""
    app = FastAPI(title="sipsec UA gateway", version="1",
                  description="Secure SIP user agents with identity-based cryptography.")

    @app.exception_handler(GatewayError)
    async def _gateway_error(_: Request, exc: GatewayError) -> JSONResponse:
        return _error(exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
        return _error(422, "invalid request: " + "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.post("/v1/users", status_code=201)
    async def login(body: LoginRequest) -> dict[str, Any]:
        settings = await gateway.login(body.aor, body.password, policy=body.policy,
                                       auto_answer=body.auto_answer, hold_s=body.hold_s,
                                       phone_password=body.phone_password)
        return gateway.user_doc(settings.aor)

    @app.get("/v1/users")
    async def users() -> dict[str, Any]:
        return {"users": gateway.user_list()}

    @app.delete("/v1/users/{aor}", status_code=204)
    async def logout(aor: str) -> Response:
        await gateway.logout(aor)
        return Response(status_code=204)

    @app.post("/v1/calls", status_code=201)
    async def place(body: CallRequest) -> dict[str, Any]:
        call = await gateway.place_call(body.from_, body.to, secure=body.secure, wait=body.wait,
                                        timeout=body.timeout_s)
        return call.summary()

    @app.get("/v1/calls")
    async def list_calls(limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
        return {"calls": gateway.call_list(limit)}

    @app.get("/v1/calls/{call_id}")
    async def get_call(call_id: str) -> dict[str, Any]:
        return await gateway.call_doc(call_id)

    @app.get("/v1/calls/{call_id}/wire")
    async def wire(call_id: str) -> dict[str, Any]:
        return gateway.wire_view(call_id)

    @app.delete("/v1/calls/{call_id}")
    async def hangup(call_id: str) -> dict[str, Any]:
        status = await gateway.hangup(call_id)
        call = gateway.find_call(call_id)
        state = call.state.value if call is not None else CallState.ENDED.value
        return {"id": call_id, "state": state, "sip_status": status}

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        doc = dict(gateway.health())
        return JSONResponse(doc, status_code=200 if doc["status"] == "ok" else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(gateway.metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
