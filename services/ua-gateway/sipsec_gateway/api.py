"""The control API of the gateway (FastAPI; the OpenAPI document is served at /openapi.json).

Users: ``POST /v1/users`` (log in with PKG credentials; policy, auto-answer, hold time),
``POST /v1/users/bulk`` (many logins in one request, bounded concurrency; one result each),
``GET /v1/users``, ``DELETE /v1/users/{aor}``. Calls: ``GET /v1/calls`` (recent, this
replica), ``POST /v1/calls`` (from, to, secure), ``GET /v1/calls/{id}`` (state and cost: crypto
time per operation, setup time, bytes on the wire), ``GET /v1/calls/{id}/wire`` (outer and
inner messages, when traces are on; redacted), ``DELETE /v1/calls/{id}`` (hang up).
``GET /healthz`` and ``GET /livez`` (unauthenticated, say only whether the gateway is up, and its
domain), ``GET /readyz`` (unauthenticated: whether it can serve — store, PKG, users, not draining —
with counts, never names; 503 naming the failing checks). Metrics are not
served here but on their own port (:meth:`~sipsec_gateway.metrics.GatewayMetrics.serve`).

Every operation but the health endpoints needs a bearer token (RFC 6750 §2.1, ``Authorization: Bearer
<token>``) with the operation's scope: ``calls`` (place, hang up), ``users`` (log in, log
out), ``read`` (list users and calls, call documents, wire views). The gateway stores only the
SHA-256 of each token (:class:`ApiTokens`, one ``sha256-hex scope,scope name`` line each in a
file) and compares digests in constant time. No token or an unknown one: 401 with
``WWW-Authenticate: Bearer`` (RFC 6750 §3); a token without the scope: 403
(``error="insufficient_scope"``, §3.1). Every error is JSON
``{"error": {"status": ..., "message": ...}}`` (with ``reason`` where a client can act on it).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import sys
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

from fastapi import FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from sipsec_gateway.calls import (
    DEPENDENCY_FAILURES,
    RETRY_AFTER_S,
    CallState,
    is_dependency_failure,
)
from sipsec_gateway.gateway import Gateway, GatewayError
from sipsec_gateway.trace import wire_view

__all__ = [
    "SCOPES",
    "ApiToken",
    "ApiTokens",
    "BulkLoginRequest",
    "CallRequest",
    "LoginRequest",
    "TokenFileError",
    "create_app",
    "load_tokens",
    "token_digest",
]

log = logging.getLogger("sipsec.gateway.api")

#: The scopes a token may hold: ``calls`` (place and hang up calls), ``users`` (log users in and
#: out), ``read`` (list users and calls, call documents, wire views).
SCOPES: Final = ("calls", "users", "read")
#: File names in the state directory when no token file is configured.
TOKENS_FILE: Final = "api-tokens"
TOKEN_FILE: Final = "api-token"  # noqa: S105 - a file name
_REALM: Final = "sipsec-gateway"


class TokenFileError(Exception):
    """A token file could not be read or has a malformed line (the message names file and line)."""


def token_digest(token: str) -> str:
    """The SHA-256 (hex) of a bearer token: what a token file holds instead of the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ApiToken:
    """One accepted token: its SHA-256, its scopes and a name (for logs; never the token)."""

    digest: bytes
    scopes: frozenset[str]
    name: str

    def line(self) -> str:
        """The token file line of this token: ``sha256-hex scope,scope name``."""
        return f"{self.digest.hex()} {','.join(s for s in SCOPES if s in self.scopes)} {self.name}"


class ApiTokens:
    """The bearer tokens the control API accepts, held as SHA-256 digests only."""

    def __init__(self, tokens: Iterable[ApiToken] = ()) -> None:
        self._tokens: list[ApiToken] = list(tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def add(self, digest_hex: str, scopes: Iterable[str], name: str) -> ApiToken:
        """Accept the token whose SHA-256 is ``digest_hex`` with ``scopes`` (ValueError if malformed)."""
        try:
            digest = bytes.fromhex(digest_hex)
        except ValueError:
            raise ValueError("the token digest must be 64 hex digits (a SHA-256)") from None
        if len(digest) != 32:
            raise ValueError("the token digest must be 64 hex digits (a SHA-256)")
        chosen = frozenset(s.strip() for s in scopes if s.strip())
        unknown = sorted(chosen - set(SCOPES))
        if unknown or not chosen:
            raise ValueError(f"scopes must be some of {', '.join(SCOPES)} (got {', '.join(unknown) or 'none'})")
        if not name or any(ch.isspace() for ch in name):
            raise ValueError("the token name must be one word")
        token = ApiToken(digest, chosen, name)
        self._tokens.append(token)
        return token

    def issue(self, name: str, scopes: Iterable[str] = SCOPES) -> str:
        """A new random token with ``scopes``, accepted from now on; the token itself is returned
        (and kept nowhere)."""
        token = "sgw_" + secrets.token_urlsafe(32)
        self.add(token_digest(token), scopes, name)
        return token

    def check(self, presented: str) -> ApiToken | None:
        """The token ``presented`` is, or None: its digest compared with every one held, each in
        constant time, so the time taken says nothing about which or how much matched."""
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        found: ApiToken | None = None
        for token in self._tokens:
            if hmac.compare_digest(digest, token.digest) and found is None:
                found = token
        return found

    def lines(self) -> str:
        return "".join(t.line() + "\n" for t in self._tokens)

    @classmethod
    def parse(cls, text: str, source: str = "token file") -> ApiTokens:
        """Tokens from ``sha256-hex scope,scope name`` lines (``#`` comments and blank lines allowed)."""
        tokens = cls()
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            fields = line.split()
            if len(fields) != 3:
                raise TokenFileError(f"{source}, line {number}: expected 'sha256-hex scope,scope name'")
            try:
                tokens.add(fields[0], fields[1].split(","), fields[2])
            except ValueError as exc:
                raise TokenFileError(f"{source}, line {number}: {exc}") from None
        return tokens

    @classmethod
    def from_file(cls, path: str | Path) -> ApiTokens:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenFileError(f"cannot read the token file {path}: {exc}") from None
        tokens = cls.parse(text, str(path))
        if not tokens:
            raise TokenFileError(f"the token file {path} holds no token")
        return tokens


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new file readable by its owner only (0600), atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "sipsec-gateway"


def load_tokens(tokens_file: str, state_dir: str = "", *, stderr: TextIO | None = None) -> ApiTokens:
    """The control API's tokens: from ``tokens_file`` when set; else from ``api-tokens`` in
    ``state_dir``, made at the first start with one token of every scope.

    That first token is written, alone, to ``api-token`` beside it (0600) and announced once
    on ``stderr``: the token itself only when ``stderr`` is a terminal (a log collector reads
    anything else), otherwise the file's path. It is never logged.
    """
    if tokens_file:
        return ApiTokens.from_file(tokens_file)
    directory = Path(state_dir) if state_dir else default_state_dir()
    hashes = directory / TOKENS_FILE
    if hashes.exists():
        return ApiTokens.from_file(hashes)
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        tokens = ApiTokens()
        token = tokens.issue("admin")
        _write_private(directory / TOKEN_FILE, token + "\n")
        _write_private(hashes, "# control API tokens: sha256-hex scope,scope name\n" + tokens.lines())
    except OSError as exc:
        raise TokenFileError(f"cannot write the control API's tokens in {directory}: {exc}") from None
    out = sys.stderr if stderr is None else stderr
    if out.isatty():
        print(f"sipsec-gateway: control API token (scopes {','.join(SCOPES)}), shown once: {token}", file=out)
    print(f"sipsec-gateway: a control API token was generated into {directory / TOKEN_FILE} (0600)", file=out,
          flush=True)
    return tokens


class LoginRequest(BaseModel):
    aor: str = Field(description="the user's SIP address of record, e.g. sip:alice@atlanta.com")
    password: str = Field(description="the user's PKG password", repr=False)
    policy: str | None = Field(None, description="secure-only (default) | prefer-secure | plain")
    auto_answer: bool = Field(False, description="answer incoming calls at once (callee users)")
    hold_s: float | None = Field(None, ge=0, description="with auto_answer: hang up this long after answering")
    phone_password: str | None = Field(None, repr=False, description="the Digest password the user's plain phone "
                                       "answers with (REGISTER 401, INVITE 407); when the gateway has a phone side "
                                       "and none is given, one is generated and returned once in the response")


class BulkLoginRequest(BaseModel):
    users: list[LoginRequest] = Field(min_length=1, max_length=10_000,
                                      description="the users to log in (each as POST /v1/users takes one)")
    concurrency: int = Field(8, ge=1, le=64, description="logins in progress at once")


class CallRequest(BaseModel):
    from_: str = Field(alias="from", description="the calling user (logged in here)")
    to: str = Field(description="the callee's SIP address of record")
    secure: bool | None = Field(None, description="secure the call (default: per the caller's policy)")
    wait: bool = Field(True, description="answer after the call is set up (or failed)")
    timeout_s: float | None = Field(None, gt=0, le=300, description="longest wait for the final response")


class _ApiError(StarletteHTTPException):
    """An error answered as JSON, with an optional machine-readable ``reason``."""

    def __init__(self, status: int, message: str, reason: str = "",
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status, message, dict(headers) if headers else None)
        self.reason = reason


def _error(status: int, message: str, reason: str = "", headers: Mapping[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"status": status, "message": message}
    if reason:
        body["reason"] = reason
    return JSONResponse({"error": body}, status_code=status, headers=dict(headers) if headers else None)


_bearer = HTTPBearer(auto_error=False, scheme_name="bearer",
                     description="a control API token (scopes: calls, users, read)")
_BEARER = Security(_bearer)  # declares the scheme in the OpenAPI document; _Authorizer checks it


class _Authorizer:
    """Checks the bearer token of a request against :class:`ApiTokens` for one scope."""

    def __init__(self, tokens: ApiTokens, gateway: Gateway) -> None:
        self.tokens = tokens
        self.gateway = gateway

    def _refuse(self, status: int, reason: str, message: str, challenge: str) -> _ApiError:
        self.gateway.metrics.api_auth_failures.labels(reason).inc()
        return _ApiError(status, message, reason, {"WWW-Authenticate": challenge})

    def authorize(self, request: Request, scope: str) -> ApiToken:
        """The request's token if it holds ``scope``; else the 401/403 error to answer with."""
        header = request.headers.get("authorization", "")
        kind, _, credentials = header.partition(" ")
        if kind.lower() != "bearer" or not credentials.strip():
            raise self._refuse(401, "missing", "a bearer token is required (Authorization: Bearer <token>)",
                               f'Bearer realm="{_REALM}"')
        token = self.tokens.check(credentials.strip())
        if token is None:
            raise self._refuse(401, "invalid", "the bearer token is not valid",
                               f'Bearer realm="{_REALM}", error="invalid_token"')
        if scope not in token.scopes:
            raise self._refuse(403, "scope", f"the token lacks the {scope!r} scope this operation needs",
                               f'Bearer realm="{_REALM}", error="insufficient_scope", scope="{scope}"')
        return token


def _scope_dependency(scope: str) -> Callable[..., Coroutine[Any, Any, ApiToken]]:
    async def needs(request: Request,
                    _: HTTPAuthorizationCredentials | None = _BEARER) -> ApiToken:
        authorizer: _Authorizer = request.app.state.authorizer
        return authorizer.authorize(request, scope)

    needs.scope = scope  # type: ignore[attr-defined]  # read by _AuthRoute
    return needs


class _AuthRoute(APIRoute):
    """Checks the token before anything else of the request (its body is not even parsed first),
    so that an unauthenticated request gets 401 whatever it holds."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        scope = next((getattr(d.call, "scope", None) for d in self.dependant.dependencies
                      if getattr(d.call, "scope", None)), None)
        if scope is None:
            return handler

        async def checked(request: Request) -> Response:
            request.app.state.authorizer.authorize(request, scope)
            return await handler(request)

        return checked


_CALLS, _USERS, _READ = (Security(_scope_dependency(s)) for s in SCOPES)


async def _login_many(gateway: Gateway, body: BulkLoginRequest, address: str) -> dict[str, Any]:
    """Log ``body.users`` in, ``body.concurrency`` at a time: one result per user, in order
    (``status`` 201 or the error's status and message; a generated phone password shown once)."""
    import asyncio

    gate = asyncio.Semaphore(body.concurrency)

    async def one(user: LoginRequest) -> dict[str, Any]:
        async with gate:
            try:
                settings = await gateway.login(user.aor, user.password, policy=user.policy,
                                               auto_answer=user.auto_answer, hold_s=user.hold_s,
                                               phone_password=user.phone_password, client_address=address)
            except GatewayError as exc:
                return {"aor": user.aor, "status": exc.status, "message": exc.message}
            result: dict[str, Any] = {"aor": settings.aor, "status": 201}
            issued = gateway.take_issued_phone_password(settings.aor)
            if issued is not None:
                result["phone_password"] = issued  # shown this once; never logged
            return result

    results = await asyncio.gather(*(one(u) for u in body.users))
    ok = sum(1 for r in results if r["status"] == 201)
    return {"results": results, "ok": ok, "failed": len(results) - ok}


def _health_routes(app: FastAPI, gateway: Gateway) -> None:
    """``/livez`` and ``/readyz`` (unauthenticated, like ``/healthz``)."""

    @app.get("/livez")
    async def livez() -> JSONResponse:
        """Liveness: the process answers (green while dependencies are down)."""
        return JSONResponse({"status": "ok", "domain": gateway.domain})

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Readiness: 200 when every check passes, else 503 naming the failing checks (counts only)."""
        doc = await gateway.readiness()
        return JSONResponse(doc, status_code=200 if not doc["failing"] else 503)


def create_app(gateway: Gateway, tokens: ApiTokens) -> FastAPI:
    """The FastAPI application controlling ``gateway`` (which the caller starts and stops),
    accepting the bearer tokens of ``tokens``."""
    app = FastAPI(title="sipsec UA gateway", version="1",
                  description="Secure SIP user agents with identity-based cryptography. Every operation but "
                              "/healthz needs a bearer token with the scope it names (calls, users, read).")
    app.router.route_class = _AuthRoute
    app.state.authorizer = _Authorizer(tokens, gateway)
    config = gateway.config

    @app.exception_handler(GatewayError)
    async def _gateway_error(_: Request, exc: GatewayError) -> JSONResponse:
        # 503: a dependency failed (the PKG, too few threshold nodes) or the gateway is draining
        # or full: the client is told when to try again (RFC 9110 §10.2.3)
        headers = {"Retry-After": str(RETRY_AFTER_S)} if exc.status == 503 else None
        return _error(exc.status, exc.message, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
        return _error(422, "invalid request: " + "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "reason", ""), exc.headers)

    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        """A dependency (Redis, crypto workers, the network) failed: 503 + Retry-After, JSON."""
        log.warning("control API %s %s: a dependency failed: %s", request.method, request.url.path,
                    type(exc).__name__)
        return _error(503, "a dependency of the gateway is unavailable (see /readyz)", "unavailable",
                      {"Retry-After": str(RETRY_AFTER_S)})

    for dependency in DEPENDENCY_FAILURES:
        app.add_exception_handler(dependency, _unavailable)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        if is_dependency_failure(exc):
            return await _unavailable(request, exc)
        log.error("control API %s %s failed: %s", request.method, request.url.path, type(exc).__name__,
                  exc_info=exc)
        return _error(500, "internal error (logged by the gateway)")

    @app.post("/v1/users", status_code=201, dependencies=[_USERS])
    async def login(body: LoginRequest, request: Request) -> dict[str, Any]:
        address = request.client.host if request.client is not None else ""
        settings = await gateway.login(body.aor, body.password, policy=body.policy,
                                       auto_answer=body.auto_answer, hold_s=body.hold_s,
                                       phone_password=body.phone_password, client_address=address)
        doc = gateway.user_doc(settings.aor)
        issued = gateway.take_issued_phone_password(settings.aor)
        if issued is not None:
            doc["phone_password"] = issued  # shown this once; never logged
        return doc

    @app.post("/v1/users/bulk", dependencies=[_USERS])
    async def login_many(body: BulkLoginRequest, request: Request) -> dict[str, Any]:
        address = request.client.host if request.client is not None else ""
        return await _login_many(gateway, body, address)

    @app.get("/v1/users", dependencies=[_READ])
    async def users() -> dict[str, Any]:
        return {"users": gateway.user_list()}

    @app.delete("/v1/users/{aor}", status_code=204, dependencies=[_USERS])
    async def logout(aor: str) -> Response:
        await gateway.logout(aor)
        return Response(status_code=204)

    @app.post("/v1/calls", status_code=201, dependencies=[_CALLS])
    async def place(body: CallRequest) -> dict[str, Any]:
        call = await gateway.place_call(body.from_, body.to, secure=body.secure, wait=body.wait,
                                        timeout=body.timeout_s)
        return call.summary()

    @app.get("/v1/calls", dependencies=[_READ])
    async def list_calls(limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
        return {"calls": gateway.call_list(limit)}

    @app.get("/v1/calls/{call_id}", dependencies=[_READ])
    async def get_call(call_id: str) -> dict[str, Any]:
        return await gateway.call_doc(call_id)

    @app.get("/v1/calls/{call_id}/wire", dependencies=[_READ])
    async def wire(call_id: str, reveal: bool = Query(False, description=(
            "show SDP and identities unredacted (only where SIPSEC_GATEWAY_TRACE_REVEAL allows it)"))) -> dict[str, Any]:
        if config.trace_calls <= 0:
            raise _ApiError(404, "wire traces are off on this gateway (SIPSEC_GATEWAY_TRACE_CALLS=0, the default)",
                            "traces-off")
        if reveal and not config.trace_reveal:
            raise _ApiError(403, "unredacted wire views are off on this gateway (SIPSEC_GATEWAY_TRACE_REVEAL)",
                            "reveal-off")
        for agent in (gateway.secure, gateway.plain):
            if agent is not None:
                agent.expire_traces()
        call = gateway.find_call(call_id)
        if call is None:
            raise GatewayError(404, f"no call {call_id}")
        if call.trace is None:
            raise _ApiError(404, f"the wire trace of call {call_id} is not kept (traces are kept for the last "
                            f"{config.trace_calls} calls, {config.trace_minutes:g} minutes at most)", "trace-expired")
        return wire_view(call, redact_messages=not reveal)

    @app.delete("/v1/calls/{call_id}", dependencies=[_CALLS])
    async def hangup(call_id: str) -> dict[str, Any]:
        status = await gateway.hangup(call_id)
        call = gateway.find_call(call_id)
        state = call.state.value if call is not None else CallState.ENDED.value
        return {"id": call_id, "state": state, "sip_status": status}

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        status = str(gateway.health()["status"])  # and the (public) domain; no users, no addresses
        return JSONResponse({"status": status, "domain": gateway.domain}, status_code=200 if status == "ok" else 503)

    _health_routes(app, gateway)

    return app
