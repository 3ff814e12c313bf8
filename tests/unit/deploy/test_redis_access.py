"""Redis is a trusted store in every deployment: each service connects as its own ACL user with a
password from a secret file, the Redis requires authentication (default user off, protected
mode on) with the very rules of :data:`sipsec.stores.access.REDIS_USERS`, and only the domain's
own services can reach it — in docker-compose, Kubernetes and ``sipsec up``."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from sipsec.stores.access import REDIS_USERS, redis_username
from sipsec_cli.up import DOMAINS, Supervisor, UpOptions
from sipsec_cli.up.supervise import AOF_DEFAULT_USER, _inspect_rules

from tests.unit.deploy.test_k8s import OVERLAYS, _cm_data, _container_env, build, kinds, workloads

ROOT = Path(__file__).resolve().parents[3]
#: compose service base name / k8s Deployment -> the Redis user it must connect as
USERS = {"pkg-init": "pkg", "pkg": "pkg", "location": "location", "gateway": "gateway"}
PASSWORD_FILE = {"pkg": "SIPSEC_PKG_REDIS_PASSWORD_FILE", "location": "SIPSEC_LOCATION_REDIS_PASSWORD_FILE",
                 "proxy": "SIPSEC_PROXY_REDIS_PASSWORD_FILE", "gateway": "SIPSEC_GATEWAY_REDIS_PASSWORD_FILE"}
COMPOSE_USERS = ("pkg", "location", "gateway")  # the compose/k8s proxies use the location service
#: Redis users that are no service's: the exporter's (server statistics: no key pattern, no write,
#: not SLOWLOG GET, which returns slow commands' arguments) and, in compose, the read-only
#: `inspect` user of `sipsec up` (names and counts keys, reads no value)
EXPORTER_RULES = ("resetkeys resetchannels -@all +auth +hello +ping +info +client|setname +config|get "
                  "+latency|latest +slowlog|len")
INSPECT_RULES = _inspect_rules("unused").split(" ", 2)[2]  # without "on #<digest>"
COMPOSE_EXTRA = {"exporter": EXPORTER_RULES, "inspect": INSPECT_RULES}
K8S_EXTRA = {"exporter": EXPORTER_RULES}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def _run_acl_script(script: str, secrets: Path, data: Path, env: dict[str, str]) -> str:
    """Run a Redis container's start script with its secrets and /data under ``tmp``; the ACL file."""
    script = script.replace("exec redis-server", "exit 0; redis-server")
    out = subprocess.run(["/bin/sh", "-ec", script], env={"PATH": os.environ["PATH"], **env},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return (data / "users.acl").read_text()


def _check_acl(text: str, passwords: dict[str, str], default: str = "user default off resetkeys resetchannels -@all",
               extra: dict[str, str] | None = None) -> None:
    """The ACL file: ``default``, then each user of ``passwords`` in order, with the rules of its
    service (:data:`REDIS_USERS`) or of ``extra``; passwords only as SHA-256 digests."""
    rules = {**{u: REDIS_USERS[u].rules() for u in passwords if u in REDIS_USERS}, **(extra or {})}
    lines = text.splitlines()
    assert lines[0] == default
    assert len(lines) == 1 + len(passwords)
    for line, (user, password) in zip(lines[1:], passwords.items(), strict=True):
        digest = hashlib.sha256(password.encode()).hexdigest()
        assert line == f"user {user} on #{digest} {rules[user]}"
        assert password not in text


# --------------------------------------------------------------------------- docker-compose


def test_compose_services_connect_as_their_own_users_with_secret_passwords(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for d in DOMAINS:
        short = d.name.split(".")[0]
        for base, user in USERS.items():
            spec = services[f"{base}-{short}"]
            env = spec["environment"]
            url = env["SIPSEC_REDIS_URL"]
            assert url == f"redis://{user}@redis-{short}:6379/0", base
            assert redis_username(url) == user and ":" not in url.split("@")[0].removeprefix("redis://")
            secret = f"{short}_redis_{user}_password"
            assert env[PASSWORD_FILE[user]] == f"/run/secrets/{secret}"
            assert secret in spec["secrets"]
            # and no other service's password
            assert not [s for s in spec["secrets"] if "_redis_" in s and s != secret], base
        gateway = services[f"gateway-{short}"]
        key = f"{short}_gateway_sealing_key"
        assert gateway["environment"]["SIPSEC_GATEWAY_SEALING_KEY_FILE"] == f"/run/secrets/{key}"
        assert key in gateway["secrets"]
        for name, spec in services.items():
            env = spec.get("environment") or {}
            if "SIPSEC_REDIS_URL" in env and name.endswith(short):
                assert redis_username(env["SIPSEC_REDIS_URL"]), f"{name} connects with no Redis user"


def test_compose_redis_requires_auth_and_sits_on_its_domains_internal_network(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for d in DOMAINS:
        short = d.name.split(".")[0]
        redis = services[f"redis-{short}"]
        script = " ".join(redis["command"])
        assert "--protected-mode yes" in script and "--aclfile /data/users.acl" in script
        # the default user: off, yet able to replay the append-only file (as `sipsec up` runs it)
        assert redis["environment"]["ACL_DEFAULT"] == AOF_DEFAULT_USER and '"$$ACL_DEFAULT"' in script
        for user in COMPOSE_USERS:
            assert redis["environment"][f"ACL_{user.upper()}"] == REDIS_USERS[user].rules()
        for user, rules in COMPOSE_EXTRA.items():
            assert redis["environment"][f"ACL_{user.upper()}"] == rules
        assert redis["networks"] == [f"{short}-data"]
        assert compose["networks"][f"{short}-data"] == {"internal": True}
        on_data = {n for n, s in services.items() if f"{short}-data" in s.get("networks", [])}
        assert on_data == {f"{b}-{short}" for b in ("redis", "pkg-init", "pkg", "location", "gateway", "redis-exporter")}
        assert "worker" not in on_data and f"proxy-{short}" not in on_data and "prometheus" not in on_data
        # the exporter: as its own ACL user, with only its own password (the JSON map its
        # --redis.password-file reads)
        exporter = services[f"redis-exporter-{short}"]
        assert f"--redis.addr=redis://redis-{short}:6379" in exporter["command"]
        assert "--redis.user=exporter" in exporter["command"]
        assert exporter["secrets"] == [f"{short}_redis_exporter_passwords"]
        assert f"--redis.password-file=/run/secrets/{short}_redis_exporter_passwords" in exporter["command"]
        assert "NOAUTH" in " ".join(redis["healthcheck"]["test"])


def test_compose_redis_script_writes_the_acl_file_from_the_secrets(compose: dict[str, Any], tmp_path: Path) -> None:
    redis = compose["services"]["redis-atlanta"]
    secrets, data = tmp_path / "secrets", tmp_path / "data"
    secrets.mkdir()
    data.mkdir()
    passwords = {u: os.urandom(24).hex() for u in (*COMPOSE_USERS, *COMPOSE_EXTRA)}
    for user, password in passwords.items():
        (secrets / f"atlanta_redis_{user}_password").write_text(password + "\n")
    script = redis["command"][0].replace("$$", "$").replace("/run/secrets", str(secrets)).replace("/data", str(data))
    text = _run_acl_script(script, secrets, data, {k: str(v) for k, v in redis["environment"].items()})
    _check_acl(text, passwords, default=AOF_DEFAULT_USER, extra=COMPOSE_EXTRA)
    assert (data / "users.acl").stat().st_mode & 0o077 == 0  # umask 077


# --------------------------------------------------------------------------- Kubernetes


@pytest.mark.parametrize("name", OVERLAYS)
def test_k8s_services_connect_as_their_own_users_and_redis_requires_auth(name: str, tmp_path: Path) -> None:
    docs = build(f"k8s/overlays/{name}")
    cms = _cm_data(docs)
    deps = {d["metadata"]["name"]: d for d in workloads(docs)}
    for dep_name, user in (("pkg", "pkg"), ("location", "location"), ("gateway", "gateway")):
        pod = deps[dep_name]["spec"]["template"]["spec"]
        vols = {v["name"]: v for v in pod["volumes"]}
        for c in [*pod.get("initContainers", []), *pod["containers"]]:
            env = _container_env(c, cms)
            assert env["SIPSEC_REDIS_URL"] == f"redis://{user}@redis:6379/0", (dep_name, c["name"])
            path = env[PASSWORD_FILE[user]]
            mount = next(m for m in c["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
            secret = vols[mount["name"]]["secret"]
            assert secret["secretName"] == "redis-users"
            assert secret["items"] == [{"key": user, "path": path.rsplit("/", 1)[1]}]  # its own password only
            assert secret["defaultMode"] & 0o007 == 0
        gw_env = _container_env(deps["gateway"]["spec"]["template"]["spec"]["containers"][0], cms)
        assert gw_env["SIPSEC_GATEWAY_SEALING_KEY_FILE"].startswith("/run/secrets/")
    for dep_name, dep in deps.items():  # nobody else holds a Redis password (the exporter: its own)
        if dep_name not in ("pkg", "location", "gateway", "redis"):
            for v in dep["spec"]["template"]["spec"].get("volumes", []):
                if v.get("secret", {}).get("secretName") == "redis-users":
                    assert dep_name == "redis-exporter", dep_name
                    assert v["secret"]["items"] == [{"key": "exporter", "path": "exporter"}]

    redis = deps["redis"]["spec"]["template"]["spec"]["containers"][0]
    script = " ".join(redis["args"])
    assert "--protected-mode no" not in script
    assert "--protected-mode yes" in script and "--aclfile /data/users.acl" in script
    acl_cm = next(c for c in kinds(docs, "ConfigMap") if c["metadata"]["name"].startswith("redis-acl"))
    for user in COMPOSE_USERS:
        assert acl_cm["data"][f"ACL_{user.upper()}"] == REDIS_USERS[user].rules()
    for user, rules in K8S_EXTRA.items():
        assert acl_cm["data"][f"ACL_{user.upper()}"] == rules
    assert "NOAUTH" in " ".join(redis["readinessProbe"]["exec"]["command"])
    secrets, data = tmp_path / "secrets", tmp_path / "data"
    secrets.mkdir()
    data.mkdir()
    passwords = {u: os.urandom(24).hex() for u in (*COMPOSE_USERS, *K8S_EXTRA)}
    for user, password in passwords.items():
        (secrets / user).write_text(password)
    script = redis["args"][0].replace("/run/secrets/sipsec-redis", str(secrets)).replace("/data", str(data))
    assert not re.search(r"\$\$", script)  # nothing Kubernetes would rewrite
    # with the append-only file on, the default user (off) may replay the services' writes
    _check_acl(_run_acl_script(script, secrets, data, dict(acl_cm["data"])), passwords, default=AOF_DEFAULT_USER,
               extra=K8S_EXTRA)


# --------------------------------------------------------------------------- sipsec up


def test_up_services_connect_as_their_own_users(tmp_path: Path) -> None:
    sup = Supervisor(UpOptions(state_dir=str(tmp_path)))
    topo = sup.topo
    for d in DOMAINS:
        topo.redis_urls[d.name] = f"redis://{d.host}:6379/0"
        topo.redis_password_files[d.name] = {u: tmp_path / d.name / "redis" / f"{u}.password" for u in REDIS_USERS}
        topo.pkg_dirs[d.name] = tmp_path / d.name / "pkg"
        topo.kek_files[d.name] = tmp_path / d.name / "kek"
        topo.fingerprints[d.name] = "sha256:" + "ab" * 32
    sup.plan()
    seen = set()
    for inst in topo.instances.values():
        env = inst.spec.env(topo, inst)
        if "SIPSEC_REDIS_URL" not in env:
            continue
        user = inst.spec.name
        assert inst.domain is not None
        assert env["SIPSEC_REDIS_URL"] == f"redis://{user}@{inst.domain.host}:6379/0", inst.label
        assert env[PASSWORD_FILE[user]] == str(topo.redis_password_files[inst.domain.name][user])
        seen.add(user)
    assert seen >= {"pkg", "location", "gateway"}
    for d in DOMAINS:
        gw = topo.get(d, "gateway")
        assert gw is not None
        assert gw.spec.env(topo, gw)["SIPSEC_GATEWAY_SEALING_KEY_FILE"].startswith(str(tmp_path / d.name))
