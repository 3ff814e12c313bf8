"""The control API: JSON errors with proper status codes, users, OpenAPI and health (authentication: test_api_auth.py)."""

from __future__ import annotations

from tests.integration.gateway.harness import PASSWORD, TwoDomains, login


async def test_api_errors_users_and_documents() -> None:
    async with TwoDomains() as net:
        api = net.atlanta.client
        cases = [
            (await api.post("/v1/users", json={"aor": "sip:alice@atlanta.com", "password": "wrong password"}), 401),
            (await api.post("/v1/users", json={"aor": "sip:alice@biloxi.com", "password": PASSWORD}), 400),
            (await api.post("/v1/users", json={"aor": "not an aor", "password": PASSWORD}), 400),
            (await api.post("/v1/users", json={"aor": "sip:alice@atlanta.com", "password": PASSWORD,
                                               "policy": "sometimes"}), 400),
            (await api.post("/v1/users", json={"password": PASSWORD}), 422),
            (await api.post("/v1/calls", json={"from": "sip:alice@atlanta.com", "to": "sip:bob@biloxi.com"}), 404),
            (await api.get("/v1/calls/nosuchcall"), 404),
            (await api.delete("/v1/calls/nosuchcall"), 404),
            (await api.delete("/v1/users/sip:alice@atlanta.com"), 404),
        ]
        for response, status in cases:
            assert response.status_code == status, response.text
            error = response.json()["error"]
            assert error["status"] == status and error["message"]
        assert "PKG login failed" in cases[0][0].json()["error"]["message"]

        user = await login(net.atlanta, "alice")
        assert user["policy"] == "secure-only" and user["registered"] and len(user["key_periods"]) == 2
        plain = await api.post("/v1/calls", json={"from": "sip:alice@atlanta.com", "to": "sip:bob@biloxi.com",
                                                  "secure": False})
        assert plain.status_code == 403 and "secure-only" in plain.json()["error"]["message"]
        assert (await api.get("/v1/users")).json()["users"][0]["aor"] == "sip:alice@atlanta.com"
        assert (await api.get("/v1/calls")).json() == {"calls": []}
        assert (await api.get("/v1/calls?limit=0")).status_code == 422
        assert net.atlanta.gateway.metrics.sample("sipsec_gateway_users_logged_in") == 1

        spec = (await api.get("/openapi.json")).json()
        assert {"/v1/users", "/v1/users/{aor}", "/v1/calls", "/v1/calls/{call_id}", "/v1/calls/{call_id}/wire",
                "/healthz"} <= set(spec["paths"])
        assert "/metrics" not in spec["paths"]  # metrics have a port of their own (test_api_auth.py)
        health = await api.get("/healthz")  # up, and nothing more: the user count is in the metrics
        assert health.status_code == 200 and health.json() == {"status": "ok", "domain": "atlanta.com"}
        assert len((await api.get("/v1/users")).json()["users"]) == 1

        gone = await api.delete("/v1/users/sip:alice@atlanta.com")
        assert gone.status_code == 204
        assert (await api.get("/v1/users")).json()["users"] == []
        assert net.atlanta.gateway.metrics.sample("sipsec_gateway_users_logged_in") == 0
        # unregistered: a call to alice now finds no binding at the proxy
        await login(net.biloxi, "bob")
        miss = await net.biloxi.client.post("/v1/calls", json={"from": "sip:bob@biloxi.com",
                                                                "to": "sip:alice@atlanta.com"})
        assert miss.json()["state"] == "failed" and miss.json()["sip_status"] in (404, 480)
        listed = (await net.biloxi.client.get("/v1/calls")).json()["calls"]
        assert [c["id"] for c in listed] == [miss.json()["id"]]
