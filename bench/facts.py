"""Facts that make a result file comparable: the machine, and what software ran."""

from __future__ import annotations

import os
import platform
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Final

from bench.stack import ROOT

LIBRARIES: Final = (
    "aimtp",
    "litestar",
    "uvicorn",
    "uvloop",
    "httptools",
    "msgspec",
    "sqlalchemy",
    "asyncmy",
    "aiokafka",
    "faststream",
    "aiohttp",
    "apscheduler",
    "prometheus-client",
)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_mb() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_mb": _memory_mb(),
        "kernel": platform.release(),
        "os": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def kafka_version(lib: Path = ROOT / "infra" / "kafka" / "lib") -> str:
    """The broker release the local scripts run, from its jar (``kafka_2.13-X.Y.Z.jar``)."""
    for jar in sorted(lib.glob("kafka_*.jar")):
        match = re.fullmatch(r"kafka_[\d.]+-(.+)\.jar", jar.name)
        if match:
            return match.group(1)
    pom = ROOT / "infra" / "kafka" / "pom.xml"
    match = re.search(r"<kafka.version>(.+?)</kafka.version>", pom.read_text())
    return f"{match.group(1)} (pinned in pom.xml)" if match else "unknown"


def library_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def versions(*, mariadb: str, vegeta: str) -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "mariadb": mariadb,
        "kafka": kafka_version(),
        "vegeta": vegeta,
        "libraries": library_versions(),
    }
