"""Process and machine figures read from /proc (Linux), without extra dependencies."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident set (``VmHWM``) in MiB; None once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time the process has used so far."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces: count fields after its closing paren.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


@dataclass(frozen=True)
class CpuSample:
    busy: int
    total: int


def machine_cpu() -> CpuSample:
    """Cumulative jiffies of all cores: busy (everything but idle and iowait) and total."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()
    values = [int(v) for v in first[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])  # guest time is already counted in user
    return CpuSample(busy=total - idle, total=total)


def busy_percent(before: CpuSample, after: CpuSample) -> float | None:
    """Share of all cores busy between two samples (100 = every core saturated)."""
    total = after.total - before.total
    if total <= 0:
        return None
    return 100.0 * (after.busy - before.busy) / total
