"""``sipsec-pkg`` subcommands run in-process: help, gen-kek, init, user add/list/remove, fingerprint."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from sipsec.stores.pkg import MemoryPkgStore
from sipsec_pkg.__main__ import main
from sipsec_pkg.material import generate_kek, load_material
from sipsec_pkg.node import load_users_file, users_file
from sipsec_pkg.passwords import password_matches


@pytest.fixture
def env(monkeypatch, tmp_path):
    kek = generate_kek()
    monkeypatch.setenv("SIPSEC_PKG_KEK", kek)
    monkeypatch.setenv("SIPSEC_PKG_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SIPSEC_PKG_SCRYPT_N", "16")
    monkeypatch.setenv("SIPSEC_PKG_SCRYPT_R", "1")
    return tmp_path, kek


@pytest.mark.parametrize("argv", [[], ["serve"], ["init"], ["user"], ["user", "add"], ["user", "remove"],
                                  ["user", "list"], ["gen-kek"], ["fingerprint"]])
def test_every_help_works(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    assert "usage: sipsec-pkg" in capsys.readouterr().out


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "sipsec_pkg", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "serve" in out.stdout and "init" in out.stdout


def test_init_users_and_fingerprint(env, capsys, monkeypatch):
    folder, kek = env
    assert main(["init", "--domain", "atlanta.com"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["domain"] == "atlanta.com" and info["fingerprint"].startswith("sha256:")
    assert main(["fingerprint"]) == 0
    assert capsys.readouterr().out.strip() == info["fingerprint"]
    assert main(["init", "--domain", "atlanta.com"]) == 1  # refuses to overwrite
    assert "already initialised" in capsys.readouterr().err

    monkeypatch.setattr(sys, "stdin", io.StringIO("hunter2 hunter2\n"))
    assert main(["user", "add", "sip:Alice@Atlanta.com", "--password-stdin"]) == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO("pw-bob\n"))
    assert main(["user", "add", "sip:bob@atlanta.com", "--password-stdin"]) == 0
    with pytest.raises(SystemExit, match="not in this PKG's domain"):
        main(["user", "add", "sip:eve@evil.com", "--password-stdin"])
    capsys.readouterr()
    assert main(["user", "list"]) == 0
    assert capsys.readouterr().out.split() == ["sip:Alice@atlanta.com", "sip:bob@atlanta.com"]
    users = {u.aor: u for u in load_users_file(users_file(folder))}
    assert password_matches("hunter2 hunter2", users["sip:Alice@atlanta.com"].password_hash)
    assert "hunter2" not in users_file(folder).read_text()
    assert main(["user", "remove", "sip:bob@atlanta.com"]) == 0
    with pytest.raises(SystemExit, match="no user"):
        main(["user", "remove", "sip:bob@atlanta.com"])
    assert [u.aor for u in load_users_file(users_file(folder))] == ["sip:Alice@atlanta.com"]
    assert MemoryPkgStore(users=load_users_file(users_file(folder)))  # loads as the server would


def test_threshold_init_writes_one_share_per_node(env, capsys):
    folder, kek = env
    assert main(["init", "--domain", "chicago.com", "--threshold", "3", "--nodes", "5"]) == 0
    assert json.loads(capsys.readouterr().out)["threshold"] == 3
    assert len(list(folder.glob("share-*.sealed"))) == 5
    import base64

    assert load_material(folder, base64.b64decode(kek), node=4).node_index == 4


def test_init_without_kek_fails_cleanly(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("SIPSEC_PKG_KEK", raising=False)
    monkeypatch.delenv("SIPSEC_PKG_KEK_FILE", raising=False)
    monkeypatch.setenv("SIPSEC_PKG_DATA_DIR", str(tmp_path))
    assert main(["init", "--domain", "atlanta.com"]) == 1
    assert "SIPSEC_PKG_KEK" in capsys.readouterr().err
    assert not (tmp_path / "params.json").exists()


def test_gen_kek(capsys):
    assert main(["gen-kek"]) == 0
    import base64

    assert len(base64.b64decode(capsys.readouterr().out.strip())) == 32


def test_serve_refuses_to_run_without_tls_or_explicit_plaintext(env, capsys, monkeypatch):
    assert main(["init", "--domain", "atlanta.com"]) == 0
    monkeypatch.setenv("SIPSEC_PKG_METRICS_PORT", "-1")
    monkeypatch.delenv("SIPSEC_PKG_PLAINTEXT", raising=False)
    capsys.readouterr()
    assert main(["serve", "--listen", "127.0.0.1:0"]) == 1
    assert "SIPSEC_PKG_PLAINTEXT" in capsys.readouterr().err
    monkeypatch.setenv("SIPSEC_PKG_KEK", generate_kek())  # another KEK cannot open the master secret
    assert main(["serve", "--listen", "127.0.0.1:0", "--plaintext"]) == 1
    assert "cannot unseal" in capsys.readouterr().err
