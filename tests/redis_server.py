"""A real redis-server for the fleet tests and benchmark: its own process on a free loopback port,
in its own directory, with the append-only file fsynced on every write (so an acknowledged event
survives a kill -9 of the server) and no RDB snapshots.

Tests get it through the fixtures in test_fleet.py. Without `redis-server` on PATH (or the
`redis` client) they skip; SONA_REQUIRE_REDIS=1 (set by .ci/run) turns that skip into a failure.

    with RedisServer(tmp_dir) as server:
        client = redis.Redis.from_url(server.url)
        server.kill()      # SIGKILL, as a crash would
        server.start()     # same port, same directory: the AOF is replayed
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

REQUIRE_ENV = "SONA_REQUIRE_REDIS"


def missing_reason() -> str | None:
    """Why the fleet tests cannot run here (None when they can)."""
    if shutil.which("redis-server") is None:
        return "redis-server is not on PATH (Debian/Ubuntu: apt-get install redis-server)"
    try:
        import redis  # noqa: F401
    except ImportError:
        return "the redis client is not installed (pip install 'sona[redis]')"
    return None


def require_redis() -> None:
    """Skip the calling test when missing_reason() says Redis cannot run here; fail it instead
    under SONA_REQUIRE_REDIS=1 (CI), where a silent skip would hide a missing install step."""
    import pytest

    reason = missing_reason()
    if reason is None:
        return
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process; start() again after stop()/kill() reuses port and directory."""

    def __init__(self, directory: str, port: int | None = None) -> None:
        self.directory = str(directory)
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> None:
        if self.proc is not None:
            raise RuntimeError(f"redis-server on port {self.port} is already running")
        os.makedirs(self.directory, exist_ok=True)
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", self.directory, "--appendonly", "yes", "--appendfsync", "always",
                "--save", "", "--daemonize", "no", "--protected-mode", "no",
                "--logfile", os.path.join(self.directory, "redis.log")]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                self.proc = None
                raise RuntimeError(f"redis-server exited at start: {err or 'see redis.log'}")
            if self.ping():
                return
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server on port {self.port} did not answer within {timeout} s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: what the AOF must survive."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def _end(self, sig: int) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=30)
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
