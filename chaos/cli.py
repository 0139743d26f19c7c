"""``python -m chaos``: run the fault scenarios, print one table, write chaos/results/*.json.

Exits 1 when any scenario lost a DAG, created one twice, delivered a DAG's events out of
their commit order, lost an event, or could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from aimtp.settings import KafkaSettings
from bench import facts
from bench.db import Database
from bench.report import run_id, write_results
from bench.stack import ROOT, Environment, delete_topics
from chaos.scenarios import FAULTS, PARAMS, ScenarioReport, run_scenario

DEFAULT_DATABASE_URL: Final = "mysql+asyncmy://aimtp:aimtp@127.0.0.1:3306/aimtp_chaos"
COLUMNS: Final = (
    "scenario",
    "accepted",
    "terminal",
    "lost",
    "duplicates",
    "order_violations",
    "missing_events",
    "redelivered",
    "recover_s",
    "retries",
    "verdict",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m chaos",
        description="Faults under load against two of every AIMTP process: nothing lost, "
        "nothing duplicated, no DAG's events out of order.",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=list(FAULTS),
        metavar="NAME",
        help=f"run only this scenario (repeatable): {', '.join(FAULTS)}",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 300 DAGs and quarter-length outages"
    )
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--kafka", default=KafkaSettings().kafka_bootstrap, help="bootstrap")
    parser.add_argument("--results", type=Path, default=ROOT / "chaos" / "results")
    return parser


def say(message: str) -> None:
    print(message, flush=True)


def row(report: ScenarioReport) -> list[str]:
    verdict = report.verdict
    if verdict is None:
        return [report.name, *["-"] * (len(COLUMNS) - 2), "ERROR"]
    recover = report.figures.get("recover_s")
    return [
        report.name,
        f"{verdict.accepted:,}",
        f"{verdict.terminal:,}",
        str(len(verdict.lost)),
        str(len(verdict.duplicates)),
        str(len(verdict.order_violations)),
        str(verdict.missing_events),
        str(verdict.redelivered_events),
        "n/a" if recover is None else f"{recover:g}",
        str(sum(report.figures.get("client_retries", {}).values())),
        "PASS" if report.ok else "FAIL",
    ]


def render_table(reports: Sequence[ScenarioReport]) -> str:
    rows = [list(COLUMNS), *(row(r) for r in reports)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary_line(reports: Sequence[ScenarioReport]) -> str:
    verdicts = [r.verdict for r in reports if r.verdict is not None]
    failed = [r.name for r in reports if not r.ok]
    return (
        f"chaos: {len(reports)} scenarios, {sum(v.accepted for v in verdicts):,} DAGs accepted, "
        f"lost {sum(len(v.lost) for v in verdicts)}, "
        f"duplicates {sum(len(v.duplicates) for v in verdicts)}, "
        f"order violations {sum(len(v.order_violations) for v in verdicts)}, "
        f"missing events {sum(v.missing_events for v in verdicts)}: "
        + ("PASS" if not failed else f"FAIL ({', '.join(failed)})")
    )


def _document(report: ScenarioReport) -> dict[str, Any]:
    verdict = report.verdict
    return {
        "title": report.title,
        "ok": report.ok,
        "error": report.error,
        "verdict": None
        if verdict is None
        else {
            **asdict(verdict),
            # Ids of the offending DAGs are kept (a few) to start an investigation from.
            "lost": verdict.lost[:20],
            "duplicates": verdict.duplicates[:20],
            "order_violations": verdict.order_violations[:20],
            "lost_count": len(verdict.lost),
            "duplicates_count": len(verdict.duplicates),
            "order_violations_count": len(verdict.order_violations),
        },
        "figures": report.figures,
    }


async def run(args: argparse.Namespace) -> int:
    started = datetime.now(UTC)
    identifier = run_id(started)
    names = [name for name in FAULTS if name in (args.scenario or FAULTS)]
    params = PARAMS[args.quick]
    work = ROOT / ".local" / "chaos" / identifier
    work.mkdir(parents=True, exist_ok=True)
    environment = Environment(
        run_id=identifier,
        database_url=args.database_url,
        kafka_bootstrap=args.kafka,
        partitions=KafkaSettings().kafka_partitions,
        log_dir=work,
    )
    db = Database.from_url(args.database_url)
    mode = "quick" if args.quick else "full"
    say(f"AIMTP chaos {identifier} ({mode}): {', '.join(names)}")
    say(
        f"  each: {params.count:,} DAGs at {params.rate:g}/s from a client retrying with its "
        f"Idempotency-Key; the fault {params.fault_at:g} s in; logs in {work.relative_to(ROOT)}/"
    )
    reports: list[ScenarioReport] = []
    for name in names:
        fault = FAULTS[name]
        say(f"\n== {name}: {fault.title}")
        report = await run_scenario(fault, environment, db, params)
        reports.append(report)
        if report.error:
            say(f"   ERROR: {report.error}")
        else:
            say(f"   {row(report)[-1]}: " + ", ".join(f"{k}={v}" for k, v in _shown(report)))
    await delete_topics(environment)
    finished = datetime.now(UTC)
    document = {
        "run": {
            "id": identifier,
            "mode": mode,
            "scenarios": names,
            "params": asdict(params),
            "started_at": started.isoformat().replace("+00:00", "Z"),
            "wall_s": round((finished - started).total_seconds(), 1),
        },
        "machine": facts.machine(),
        "scenarios": {r.name: _document(r) for r in reports},
        "ok": all(r.ok for r in reports),
    }
    write_results(document, args.results, identifier)
    say("")
    say(render_table(reports))
    say(summary_line(reports))
    return 0 if all(r.ok for r in reports) else 1


def _shown(report: ScenarioReport) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in report.figures.items() if k not in ("exit_codes", "refusals")]


def main(argv: Sequence[str] | None = None) -> int:
    # The recorder's client would report every reconnect while the broker is stopped on
    # purpose; a real failure still surfaces as a scenario error.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    return asyncio.run(run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
