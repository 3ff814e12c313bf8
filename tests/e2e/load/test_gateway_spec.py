"""``--gateway DOMAIN=PHONE_HOST:PORT,API_URL,TOKEN_FILE[,SOURCE]``: the optional SOURCE addresses
are where that domain's phones bind (a compose deployment reaches its phones on the host's side
of the phones network, not on the loopback addresses used by default); tests/compose/test_load.py
drives a real deployment with it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sipsec_cli.load.profile import Profile
from sipsec_cli.load.run import LoadOptions, _specs, make_population
from sipsec_cli.load.target import LoadError, from_addresses


def _token(tmp_path: Path) -> str:
    path = tmp_path / "token"
    path.write_text("t0ken\n")
    return str(path)


def test_source_addresses_bind_the_phones(tmp_path: Path) -> None:
    tok = _token(tmp_path)
    target = from_addresses([f"atlanta.com=172.18.0.3:5080,http://127.0.0.1:8080,{tok},172.18.0.1",
                             f"BILOXI.com=172.19.0.3:5080,http://127.0.0.1:8081/,{tok},172.19.0.1+172.19.0.9"])
    assert target.domains["atlanta.com"].sources == ("172.18.0.1",)
    assert target.domains["biloxi.com"].sources == ("172.19.0.1", "172.19.0.9")
    assert target.domains["biloxi.com"].api == "http://127.0.0.1:8081" and target.domains["biloxi.com"].token == "t0ken"
    pop = make_population(list(target.domains), 20)
    specs = _specs(target, pop, LoadOptions(Profile(), 20, procs=2, users_per_address=4))
    assert len(specs) == 2
    for spec in specs:
        atl, blx = spec.domains
        assert atl.gateway == ("172.18.0.3", 5080) and set(atl.addresses) == {"172.18.0.1"}
        assert len(atl.addresses) == 3  # 10 users, 4 per socket: 3 sockets, each on the given address
        assert set(blx.addresses) == {"172.19.0.1", "172.19.0.9"}


def test_an_unreadable_token_file_is_a_load_error() -> None:
    with pytest.raises(LoadError, match="SOURCE"):
        from_addresses(["atlanta.com=127.0.0.1:5080,http://127.0.0.1:8080,/nonexistent/token"])


def test_default_addresses_and_bad_source(tmp_path: Path) -> None:
    tok = _token(tmp_path)
    target = from_addresses([f"atlanta.com=127.0.0.1:5080,http://127.0.0.1:8080,{tok}",
                             f"biloxi.com=127.0.0.1:5082,http://127.0.0.1:8081,{tok}"])
    assert all(d.sources == () for d in target.domains.values())
    spec = _specs(target, make_population(list(target.domains), 8), LoadOptions(Profile(), 8))[0]
    assert spec.domains[0].addresses == ("127.100.0.1",) and spec.domains[1].addresses == ("127.101.0.1",)
    with pytest.raises(LoadError, match="does not appear to be an IPv4 or IPv6 address"):
        from_addresses([f"atlanta.com=127.0.0.1:5080,http://127.0.0.1:8080,{tok},phones.example"])
