"""Run AIMTP processes as real subprocesses for end-to-end tests.

Each test stack gets free ports and its own database and topic through the
environment, so tests never collide with `make run` or with each other.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AIMTP = [sys.executable, "-m", "aimtp.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Process:
    """One AIMTP process: started, probed, stopped or killed; its log kept for failures."""

    def __init__(self, name: str, args: list[str], env: Mapping[str, str], log_dir: Path) -> None:
        self.name = name
        self.args = args
        self.env = {**os.environ, **env}
        self.log_path = log_dir / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            [*AIMTP, *self.args],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    async def wait_http(self, url: str, timeout: float = 30.0) -> None:
        """Wait until ``url`` answers 200, failing early if the process exited."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited early:\n{self.tail()}")
            try:
                await asyncio.to_thread(_get, url)
                return
            except OSError:
                await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.name} not healthy at {url}:\n{self.tail()}")

    def kill(self) -> None:
        """``kill -9``: no cleanup, no goodbye."""
        if self.alive():
            assert self.popen is not None
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    async def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.popen is not None
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.popen.poll() is None:
            if time.monotonic() > deadline:
                self.popen.kill()
                raise TimeoutError(f"{self.name} ignored SIGTERM for {timeout}s:\n{self.tail()}")
            await asyncio.sleep(0.05)
        return self.popen.returncode

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def _get(url: str) -> None:
    with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - local test URL
        if response.status != 200:
            raise OSError(f"{url} answered {response.status}")
