"""Fixtures shared by every test layer: free ports and a real redis-server per session."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sipsec.aio.ports import spare_port


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    """A port that was free a moment ago on ``host`` (TCP by default)."""
    return spare_port(host, tcp=kind == socket.SOCK_STREAM, udp=kind == socket.SOCK_DGRAM)


class RedisServer:
    """A real ``redis-server`` on a free loopback port, with no persistence.

    ``extra_args`` are appended to its command line (the ACL fixture's ``--aclfile``);
    ``auth`` is the ``AUTH`` command its own probes and ``flush`` send first.
    """

    def __init__(self, extra_args: tuple[str, ...] = (), auth: bytes = b"", workdir: str | None = None) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (run `make install`)")
        self.port = free_port()
        self.dir = workdir or tempfile.mkdtemp(prefix="sipsec-redis-")
        self._auth = auth
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--daemonize", "no", *extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self._command(b"PING\r\n", timeout=0.2).endswith(b"+PONG\r\n"):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not start")

    def _command(self, command: bytes, timeout: float = 2) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as c:
            c.sendall(self._auth + command)
            want = 2 if self._auth else 1
            data = b""
            while data.count(b"\r\n") < want:
                chunk = c.recv(256)
                if not chunk:
                    break
                data += chunk
            return data

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def flush(self) -> None:
        self._command(b"FLUSHALL\r\n")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session's real redis-server, flushed before each test."""
    redis_server.flush()
    return redis_server.url


class AclRedisServer(RedisServer):
    """A real ``redis-server`` run as a deployment runs it: ``--aclfile`` with one user per
    service (:data:`sipsec.stores.access.REDIS_USERS`, random passwords in 0600 files),
    the ``default`` user off, protected mode on; plus an ``admin`` user for the fixture's
    own flushes and inspection."""

    def __init__(self) -> None:
        from sipsec.stores.access import REDIS_USERS, acl_file, generate_password

        workdir = tempfile.mkdtemp(prefix="sipsec-redis-acl-")
        self.passwords = {name: generate_password() for name in REDIS_USERS}
        self.admin_password = generate_password()
        self.password_files: dict[str, str] = {}
        for name, password in self.passwords.items():
            path = os.path.join(workdir, f"{name}.password")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(password + "\n")
            self.password_files[name] = path
        acl_path = os.path.join(workdir, "users.acl")
        with open(acl_path, "w") as f:
            f.write(acl_file(self.passwords, extra={"admin": f"on >{self.admin_password} ~* &* +@all"}))
        os.chmod(acl_path, 0o600)
        auth = f"AUTH admin {self.admin_password}\r\n".encode()
        super().__init__(("--aclfile", acl_path, "--protected-mode", "yes"), auth=auth, workdir=workdir)

    def url_for(self, user: str) -> str:
        """``redis://<user>@127.0.0.1:<port>/0``: the URL a service is given (password apart)."""
        return f"redis://{user}@127.0.0.1:{self.port}/0"

    def admin_client(self) -> Any:
        """A ``redis.asyncio.Redis`` as the admin user (to inspect what the services stored)."""
        import redis.asyncio as aioredis

        return aioredis.Redis(host="127.0.0.1", port=self.port, username="admin", password=self.admin_password)


@pytest.fixture(scope="session")
def acl_redis_server() -> Iterator[AclRedisServer]:
    server = AclRedisServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def acl_redis(acl_redis_server: AclRedisServer) -> AclRedisServer:
    """The session's ACL-enabled redis-server, flushed before each test."""
    acl_redis_server.flush()
    return acl_redis_server
