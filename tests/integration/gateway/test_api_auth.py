"""The control API's defences, one test per attack: no token, a token without the scope, metrics
on the API port, decrypted traces (off by default; redacted and time-limited when on), PKG
lockout through the API (the end user's address is passed on), and the token files."""

from __future__ import annotations

import asyncio
import io
import os
import stat
from pathlib import Path

import httpx
import pytest
from sipsec_gateway.api import SCOPES, ApiTokens, TokenFileError, load_tokens, token_digest

from tests.integration.gateway.harness import PASSWORD, TwoDomains, api_app, api_tokens, call, login

ALICE = "sip:alice@atlanta.com"
BOB = "sip:bob@biloxi.com"


def _client(app: object, token: str | None = None, address: str = "127.0.0.1") -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(address, 40000)),  # type: ignore[arg-type]
                             base_url="http://gateway", headers=headers, timeout=30.0)


def _refused(response: httpx.Response, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["status"] == status and error["reason"] == reason and error["message"]
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_no_token_places_no_call_logs_nobody_out_and_reads_no_wire_view() -> None:
    async with TwoDomains() as net:
        await login(net.atlanta, "alice", auto_answer=True)
        await login(net.biloxi, "bob", auto_answer=True)
        placed = await call(net.atlanta, ALICE, BOB)  # with the harness's token: a traced call
        app = api_app(net.atlanta.client)
        async with _client(app) as anonymous, _client(app, "sgw_guessed-token") as guesser:
            for client, reason in ((anonymous, "missing"), (guesser, "invalid")):
                _refused(await client.post("/v1/calls", json={"from": ALICE, "to": BOB}), 401, reason)
                _refused(await client.delete(f"/v1/users/{ALICE}"), 401, reason)
                _refused(await client.get(f"/v1/calls/{placed['id']}/wire"), 401, reason)
                _refused(await client.delete(f"/v1/calls/{placed['id']}"), 401, reason)
                _refused(await client.post("/v1/users", json={"aor": ALICE, "password": "guess"}), 401, reason)
                _refused(await client.get("/v1/users"), 401, reason)
                # the body is not looked at before the token: garbage gets 401, not 422
                _refused(await client.post("/v1/calls", content=b"\xff{not json"), 401, reason)
            assert (await anonymous.get("/healthz")).json() == {"status": "ok", "domain": "atlanta.com"}  # health stays open
        assert [u["aor"] for u in (await net.atlanta.client.get("/v1/users")).json()["users"]] == [ALICE]
        assert (await net.atlanta.client.get("/v1/calls")).json()["calls"][0]["id"] == placed["id"]
        assert len((await net.atlanta.client.get("/v1/calls")).json()["calls"]) == 1  # no call placed
        metrics = net.atlanta.gateway.metrics
        assert metrics.sample("sipsec_gateway_api_auth_failures_total", reason="missing") == 7
        assert metrics.sample("sipsec_gateway_api_auth_failures_total", reason="invalid") == 7


async def test_read_only_token_reads_but_neither_calls_nor_logs_users_in_or_out() -> None:
    async with TwoDomains() as net:
        await login(net.atlanta, "alice", auto_answer=True)
        await login(net.biloxi, "bob", auto_answer=True)
        placed = await call(net.atlanta, ALICE, BOB)
        tokens = api_tokens(net.atlanta.client)
        reader, caller = tokens.issue("dashboard", ["read"]), tokens.issue("dialer", ["calls"])
        app = api_app(net.atlanta.client)
        async with _client(app, reader) as read_only, _client(app, caller) as calls_only:
            _refused(await read_only.post("/v1/calls", json={"from": ALICE, "to": BOB}), 403, "scope")
            _refused(await read_only.delete(f"/v1/calls/{placed['id']}"), 403, "scope")
            refused = await read_only.delete(f"/v1/users/{ALICE}")
            _refused(refused, 403, "scope")
            assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
            assert 'scope="users"' in refused.headers["www-authenticate"]
            _refused(await read_only.post("/v1/users", json={"aor": ALICE, "password": PASSWORD}), 403, "scope")
            assert (await read_only.get("/v1/users")).json()["users"][0]["aor"] == ALICE
            assert (await read_only.get(f"/v1/calls/{placed['id']}")).json()["state"] == "established"
            assert (await read_only.get(f"/v1/calls/{placed['id']}/wire")).status_code == 200
            # the calls scope places and ends calls, and reads nothing
            _refused(await calls_only.get("/v1/calls"), 403, "scope")
            _refused(await calls_only.delete(f"/v1/users/{ALICE}"), 403, "scope")
            hung = await calls_only.delete(f"/v1/calls/{placed['id']}")
            assert hung.status_code == 200 and hung.json()["sip_status"] == 200
        assert [u["aor"] for u in (await net.atlanta.client.get("/v1/users")).json()["users"]] == [ALICE]
        assert net.atlanta.gateway.metrics.sample("sipsec_gateway_api_auth_failures_total", reason="scope") == 6


async def test_metrics_are_served_on_their_own_port_not_on_the_api() -> None:
    async with TwoDomains() as net:
        await login(net.atlanta, "alice")
        api = net.atlanta.client
        for client_headers in ({}, {"Authorization": "Bearer x"}):
            response = await api.get("/metrics", headers=client_headers or None)
            assert response.status_code == 404 and response.json()["error"]["status"] == 404
        assert "sipsec_gateway" not in (await api.get("/metrics")).text
        server = net.atlanta.gateway.metrics.serve(0)
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                text = (await http.get(f"http://127.0.0.1:{server.server_port}/metrics")).text
        finally:
            server.shutdown()
        assert "sipsec_gateway_users_logged_in 1.0" in text
        assert 'sipsec_gateway_api_auth_failures_total{reason="missing"}' in text
        assert "alice" not in text


async def test_wire_view_is_off_by_default_with_a_clear_reason() -> None:
    async with TwoDomains(gateway_overrides={"atlanta.com": {"trace_calls": 0}}) as net:
        assert net.atlanta.gateway.config.trace_calls == 0
        from sipsec_gateway.config import GatewayConfig
        assert GatewayConfig().trace_calls == 0 and not GatewayConfig().trace_reveal  # the defaults
        await login(net.atlanta, "alice", auto_answer=True)
        await login(net.biloxi, "bob", auto_answer=True)
        placed = await call(net.atlanta, ALICE, BOB)
        response = await net.atlanta.client.get(f"/v1/calls/{placed['id']}/wire")
        assert response.status_code == 404
        error = response.json()["error"]
        assert error["reason"] == "traces-off" and "SIPSEC_GATEWAY_TRACE_CALLS" in error["message"]
        call_obj = net.atlanta.gateway.find_call(placed["id"])
        assert call_obj is not None and call_obj.trace is None  # nothing decrypted was kept


async def test_wire_view_redacts_sdp_and_identities_and_reveal_needs_the_setting() -> None:
    async with TwoDomains() as net:
        await login(net.atlanta, "alice", auto_answer=True)
        await login(net.biloxi, "bob", auto_answer=True)
        placed = await call(net.atlanta, ALICE, BOB)
        inner_call_id = net.atlanta.gateway.find_call(placed["id"]).call_id  # type: ignore[union-attr]
        response = await net.atlanta.client.get(f"/v1/calls/{placed['id']}/wire")
        assert response.status_code == 200
        view = response.json()
        assert view["redacted"] and len(view["messages"]) >= 3
        messages = view["messages"]
        text = "\n".join(f"{m['outer']}\n{m['inner'] or ''}\n{m['signer'] or ''}" for m in messages)
        invite = messages[0]
        assert invite["direction"] == "sent" and invite["inner"].startswith("INVITE sip:[redacted]@biloxi.com ")
        for secret in ("alice", "bob", inner_call_id, "v=0", "m=audio", "c=IN"):
            assert secret not in text, secret
        assert "[body redacted:" in invite["inner"] and "CSeq: 1 INVITE" in invite["inner"]
        assert all("outer_b64" not in m for m in messages)
        assert any(m["signer"] == "sip:[redacted]@biloxi.com" for m in messages)
        refused = await net.atlanta.client.get(f"/v1/calls/{placed['id']}/wire", params={"reveal": "true"})
        assert refused.status_code == 403 and refused.json()["error"]["reason"] == "reveal-off"


async def test_wire_view_reveals_only_with_the_setting_and_traces_expire() -> None:
    overrides = {"trace_reveal": True, "trace_minutes": 0.02}  # traces kept 1.2 s
    async with TwoDomains(gateway_overrides={"atlanta.com": overrides}) as net:
        await login(net.atlanta, "alice", auto_answer=True)
        await login(net.biloxi, "bob", auto_answer=True)
        placed = await call(net.atlanta, ALICE, BOB)
        reader = api_tokens(net.atlanta.client).issue("debugger", ["read"])
        app = api_app(net.atlanta.client)
        async with _client(app, reader) as read_only:
            shown = (await read_only.get(f"/v1/calls/{placed['id']}/wire", params={"reveal": "true"})).json()
            assert not shown["redacted"] and "m=audio" in shown["messages"][0]["inner"]
            assert "alice@atlanta.com" in shown["messages"][0]["inner"]
            assert (await read_only.get(f"/v1/calls/{placed['id']}/wire")).json()["redacted"]  # unless asked
            call_obj = net.atlanta.gateway.find_call(placed["id"])
            assert call_obj is not None
            for _ in range(100):  # the trace timer drops it, without any request
                if call_obj.trace is None:
                    break
                await asyncio.sleep(0.05)
            assert call_obj.trace is None
            gone = await read_only.get(f"/v1/calls/{placed['id']}/wire")
            assert gone.status_code == 404 and gone.json()["error"]["reason"] == "trace-expired"
            assert (await read_only.get(f"/v1/calls/{placed['id']}")).status_code == 200  # the call stays


async def test_failed_logins_through_the_api_back_off_the_guesser_not_the_user() -> None:
    # the PKG trusts the gateway (127.0.0.1) to name the end user's address; no free failure.
    # Were the address not passed on, the PKG would see 127.0.0.1 for both clients below, and
    # the guesser's failure would hold alice's own login back too.
    pkg = {"trusted_forwarders": ("127.0.0.1",), "backoff_free_failures": 0, "backoff_base_s": 60.0}
    async with TwoDomains(pkg_overrides=pkg) as net:
        tokens = api_tokens(net.atlanta.client)
        app = api_app(net.atlanta.client)
        async with _client(app, tokens.issue("kiosk", ["users"]), "198.51.100.7") as attacker, \
                _client(app, tokens.issue("alice-app", ["users"]), "203.0.113.5") as user:
            first = await attacker.post("/v1/users", json={"aor": ALICE, "password": "guess 1"})
            assert first.status_code == 401
            backed_off = await attacker.post("/v1/users", json={"aor": ALICE, "password": PASSWORD})
            assert backed_off.status_code == 429, backed_off.text  # even the right password: not checked
            # alice from her own address is not affected: the PKG saw two different clients
            mine = await user.post("/v1/users", json={"aor": ALICE, "password": PASSWORD})
            assert mine.status_code == 201, mine.text


def test_token_files_hold_digests_and_are_made_once_0600(tmp_path: Path) -> None:
    err = io.StringIO()  # not a terminal: the token goes to the file only
    tokens = load_tokens("", str(tmp_path / "state"), stderr=err)
    token_file, hashes = tmp_path / "state" / "api-token", tmp_path / "state" / "api-tokens"
    token = token_file.read_text().strip()
    assert token.startswith("sgw_") and len(token) > 40
    for path in (token_file, hashes):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert token not in hashes.read_text() and token_digest(token) in hashes.read_text()
    assert token not in err.getvalue() and str(token_file) in err.getvalue()
    found = tokens.check(token)
    assert found is not None and found.scopes == frozenset(SCOPES)
    assert tokens.check(token + "x") is None and tokens.check("") is None
    again = io.StringIO()
    reloaded = load_tokens("", str(tmp_path / "state"), stderr=again)  # the second start: read, not made
    assert again.getvalue() == "" and reloaded.check(token) is not None
    assert token_file.read_text().strip() == token


def test_token_file_lines_are_checked() -> None:
    good = ApiTokens.parse(f"# ops\n\n{token_digest('t1')} calls,read ci\n")
    assert good.check("t1") is not None and good.check("t1").scopes == frozenset({"calls", "read"})  # type: ignore[union-attr]
    for bad in (f"{token_digest('t')} admin ci", "abcd read ci", f"{token_digest('t')} read",
                f"{token_digest('t')} read two words"):
        with pytest.raises(TokenFileError, match="line 1"):
            ApiTokens.parse(bad)
    with pytest.raises(TokenFileError, match="cannot read"):
        ApiTokens.from_file("/nonexistent/tokens")

