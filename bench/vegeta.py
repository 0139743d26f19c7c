"""The load generator: vegeta (Go), driven as a subprocess.

Vegeta is cheap per request (a Go HTTP client), so the Python server is the bottleneck,
not the generator; ``cli`` checks that on every run. It supports both shapes the
scenarios need: a constant-rate open loop (``rate > 0``: requests are sent on schedule
whether or not earlier ones returned, so queueing shows up in the latencies instead of
silently lowering the offered load) and a closed loop of N workers (``rate == 0``).
Every request's send time, latency, status and ``Location`` are kept, so figures are
computed here from raw samples rather than taken from vegeta's own report.
"""

from __future__ import annotations

import asyncio
import base64
import resource
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final

import msgspec

from bench.stats import LatencySummary

# vegeta's marker result when a lazily read target list runs out: not a request.
_NO_TARGETS: Final = "no targets to attack"


@dataclass(frozen=True)
class Target:
    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def encode(self) -> bytes:
        """One line of vegeta's JSON target format."""
        line: dict[str, object] = {
            "method": self.method,
            "url": self.url,
            "header": {name: [value] for name, value in self.headers.items()},
        }
        if self.body:
            line["body"] = base64.b64encode(self.body).decode()
        return msgspec.json.encode(line)


@dataclass(frozen=True)
class Attack:
    """One vegeta run."""

    name: str
    targets: Sequence[Target]
    rate: float
    """Requests per second (open loop); 0 sends as fast as ``workers`` allow (closed loop)."""
    duration: float | None
    """Seconds; None sends every target exactly once and stops (a fixed-size burst)."""
    workers: int | None = None
    """Closed-loop concurrency; for open loops vegeta adds workers as latency requires."""
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.rate == 0 and not self.workers:
            raise ValueError("a closed-loop attack (rate 0) needs a worker count")
        if not self.targets:
            raise ValueError("an attack needs at least one target")


@dataclass(frozen=True, slots=True)
class Hit:
    """One request as vegeta saw it: times are client-side, wall clock (epoch seconds)."""

    code: int
    sent: float
    latency: float
    error: str
    url: str
    location: str | None

    @property
    def answered(self) -> float:
        return self.sent + self.latency


@dataclass
class Outcome:
    attack: Attack
    hits: list[Hit]
    cpu_seconds: float
    """CPU time (user + system) vegeta itself used: the generator's own cost."""

    def ok(self, *codes: int) -> list[Hit]:
        wanted = set(codes) or {200, 201, 202}
        return [hit for hit in self.hits if hit.code in wanted]

    def errors(self, *codes: int) -> int:
        return len(self.hits) - len(self.ok(*codes))

    def window(self) -> float:
        """First request sent to last answer received, in seconds."""
        if not self.hits:
            return 0.0
        return max(h.answered for h in self.hits) - min(h.sent for h in self.hits)

    def send_window(self) -> float:
        if len(self.hits) < 2:
            return 0.0
        return max(h.sent for h in self.hits) - min(h.sent for h in self.hits)

    def throughput(self, *codes: int) -> float:
        """Successful answers per second over the whole window."""
        window = self.window()
        return len(self.ok(*codes)) / window if window > 0 else 0.0

    def sent_rate(self) -> float:
        """The rate requests actually went out at: checks the offered load was offered."""
        window = self.send_window()
        return (len(self.hits) - 1) / window if window > 0 else 0.0

    def latency(self, hits: Iterable[Hit] | None = None) -> LatencySummary:
        """Percentiles over every request, failed ones included (a fast error is no win)."""
        return LatencySummary.of_seconds(h.latency for h in (self.hits if hits is None else hits))

    def status_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for hit in self.hits:
            # vegeta prefixes transport errors with the method and URL; the cause is last.
            key = str(hit.code) if hit.code else f"0 ({hit.error.rsplit(': ', 1)[-1][:60]})"
            counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items()))


class _Result(msgspec.Struct):
    code: int
    timestamp: datetime
    latency: int
    error: str = ""
    url: str = ""
    headers: dict[str, list[str]] | None = None


_decoder: Final = msgspec.json.Decoder(_Result)


def parse_results(lines: bytes) -> list[Hit]:
    """Hits from ``vegeta encode --to json`` output (one JSON object per line)."""
    hits: list[Hit] = []
    for result in _decoder.decode_lines(lines):
        if result.error == _NO_TARGETS:
            continue
        location = None
        if result.headers:
            values = result.headers.get("Location")
            location = values[0] if values else None
        hits.append(
            Hit(
                code=result.code,
                sent=result.timestamp.timestamp(),
                latency=result.latency / 1e9,
                error=result.error,
                url=result.url,
                location=location,
            )
        )
    hits.sort(key=lambda h: h.sent)
    return hits


def _raise_open_files_limit() -> None:
    """An open loop against a saturated server holds one connection per request in flight;
    with the usual soft limit of 1024 descriptors vegeta would fail on its side first."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Vegeta:
    def __init__(self, binary: Path, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self._runs = 0

    async def version(self) -> str:
        out = await self._run([str(self.binary), "-version"])
        for line in out.decode().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "Version" and value.strip():
                return value.strip()
        return "unknown"

    async def attack(self, attack: Attack) -> Outcome:
        self._runs += 1
        stem = self.workdir / f"{self._runs:02d}-{attack.name}"
        targets = stem.with_suffix(".targets.jsonl")
        targets.write_bytes(b"\n".join(t.encode() for t in attack.targets) + b"\n")
        results = stem.with_suffix(".bin")
        args = [
            str(self.binary),
            "attack",
            "-format=json",
            f"-targets={targets}",
            f"-output={results}",
            f"-name={attack.name}",
            f"-timeout={attack.timeout}s",
            "-max-body=0",  # only the status and the Location header are needed
            f"-rate={attack.rate:g}/1s" if attack.rate else "-rate=0",
        ]
        if attack.workers:
            args += [f"-workers={attack.workers}", f"-max-workers={attack.workers}"]
        if attack.duration is None:
            args += ["-lazy", "-duration=0"]
        else:
            args.append(f"-duration={attack.duration:g}s")
        cpu_before = _children_cpu()
        await self._run(args)
        cpu = _children_cpu() - cpu_before
        encoded = await self._run([str(self.binary), "encode", "--to", "json", str(results)])
        return Outcome(attack=attack, hits=parse_results(encoded), cpu_seconds=cpu)

    async def _run(self, args: list[str]) -> bytes:
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=_raise_open_files_limit,
        )
        out, err = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(
                f"{Path(args[0]).name} {args[1] if len(args) > 1 else ''} failed "
                f"(exit {process.returncode} after {time.monotonic() - started:.1f}s): "
                f"{err.decode(errors='replace')[-500:]}"
            )
        return out
