"""``python -m bench``: run the scenarios, print one table, write bench/results/*.json."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aimtp.settings import KafkaSettings
from bench import facts
from bench.db import Database, clear_scenario_rows, prepare_schema, server_version
from bench.report import (
    ScenarioResult,
    build_document,
    render_table,
    run_id,
    summary,
    write_results,
)
from bench.scenarios import SCENARIOS, Context
from bench.stack import ROOT, TENANT, Environment, delete_topics
from bench.vegeta import Vegeta

DEFAULT_DATABASE_URL = "mysql+asyncmy://aimtp:aimtp@127.0.0.1:3306/aimtp_bench"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="AIMTP benchmarks: every figure against a baseline measured in the same "
        "run, or a latency at a fixed offered load.",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=list(SCENARIOS),
        metavar="NAME",
        help=f"run only this scenario (repeatable): {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--quick", action="store_true", help="short smoke version: small loads, seconds each"
    )
    parser.add_argument(
        "--list", action="store_true", help="describe the scenarios and their loads; run nothing"
    )
    parser.add_argument(
        "--vegeta",
        type=Path,
        default=ROOT / ".local" / "bin" / "vegeta",
        help="the vegeta binary (make bench installs it)",
    )
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--kafka", default=KafkaSettings().kafka_bootstrap, help="bootstrap")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 2 when a target is missed"
    )
    return parser


def say(message: str) -> None:
    print(message, flush=True)


def describe(quick: bool) -> str:
    lines = []
    for scenario in SCENARIOS.values():
        load = scenario.load(quick)
        targets = ", ".join(f"{t.key} {t.describe()}" for t in scenario.targets)
        lines += [
            f"{scenario.name}: {scenario.title}",
            f"  load:    {load.short()}",
            f"  figures: {scenario.method}",
            f"  targets: {targets}",
        ]
    return "\n".join(lines)


def _generator_line(results: dict[str, ScenarioResult]) -> str:
    submit = results.get("submit")
    generator = submit.details.get("generator") if submit else None
    if not generator:
        return "load generator: vegeta; its headroom is measured by the submit scenario (not run)"
    verdict = (
        "it outpaces the server" if generator["outpaces_server"] else "it may limit the figures"
    )
    return (
        f"load generator: vegeta reached {generator['healthz_max_rps']:,.0f} req/s on /healthz "
        f"vs {generator['submit_max_rps']:,.0f} req/s on POST /v1/dags "
        f"({generator['headroom']}x), using {generator['vegeta_cores_during_submit']} of a core "
        f"during the submit run: {verdict}; open-loop scenarios report sent_rps"
    )


async def run(args: argparse.Namespace) -> int:
    started = datetime.now(UTC)
    identifier = run_id(started)
    names = args.scenario or list(SCENARIOS)
    names = [name for name in SCENARIOS if name in names]  # always in run order
    mode = "quick" if args.quick else "full"
    if not args.vegeta.exists():
        say(f"vegeta not found at {args.vegeta}: `make bench` installs it")
        return 1
    work = ROOT / ".local" / "bench" / identifier
    work.mkdir(parents=True, exist_ok=True)
    environment = Environment(
        run_id=identifier,
        database_url=args.database_url,
        kafka_bootstrap=args.kafka,
        partitions=KafkaSettings().kafka_partitions,
        log_dir=work,
    )
    db = Database.from_url(args.database_url)
    vegeta = Vegeta(args.vegeta, work)
    say(f"AIMTP benchmark {identifier} ({mode}): {', '.join(names)}")
    say(f"  process logs and raw vegeta results: {work.relative_to(ROOT)}/")
    schema_recreated = await prepare_schema(db)
    await clear_scenario_rows(db, TENANT)
    ctx = Context(environment=environment, db=db, vegeta=vegeta, quick=args.quick, say=say)
    for name in names:
        scenario = SCENARIOS[name]
        result = scenario.new_result(args.quick)
        say(f"\n== {name}: {scenario.title}")
        say(f"   load: {result.load.short()}")
        say(f"   how:  {scenario.method}")
        began = time.monotonic()
        try:
            await scenario.run(ctx, result)
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {exc}"
            with (work / "errors.log").open("a") as out:
                out.write(f"--- {name}\n{traceback.format_exc()}\n")
            say(f"   ERROR: {result.error} (traceback in {work.relative_to(ROOT)}/errors.log)")
        finally:
            if name != "memory":
                await clear_scenario_rows(db, TENANT)
        result.details["wall_s"] = round(time.monotonic() - began, 1)
        ctx.results[name] = result
        say(f"   done in {result.details['wall_s']} s")
    await delete_topics(environment)

    finished = datetime.now(UTC)
    results = list(ctx.results.values())
    document = build_document(
        run={
            "id": identifier,
            "mode": mode,
            "scenarios": names,
            "started_at": started.isoformat().replace("+00:00", "Z"),
            "finished_at": finished.isoformat().replace("+00:00", "Z"),
            "wall_s": round((finished - started).total_seconds(), 1),
            "schema_recreated": schema_recreated,
            "database": db.name,
            "percentiles": "linear interpolation between closest ranks (numpy's default)",
        },
        machine=facts.machine(),
        versions=facts.versions(mariadb=await server_version(db), vegeta=await vegeta.version()),
        stack=_stack_section(ctx),
        results=results,
    )
    paths = write_results(document, args.results, identifier)
    say("")
    say(render_table(results))
    counts = summary(results)
    say(
        f"targets: {counts['pass']} passed, {counts['fail']} failed, {counts['n/a']} not measured"
        f" ({mode} run, {document['run']['wall_s']} s)"
    )
    say(_generator_line(ctx.results))
    say(f"results: {', '.join(_shown(p) for p in paths)}")
    if any(r.error for r in results):
        return 1
    if args.strict and counts["fail"]:
        return 2
    return 0


def _shown(path: Path) -> str:
    """Paths inside the repository relative to it; others as given."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _stack_section(ctx: Context) -> dict[str, Any]:
    submit = ctx.results.get("submit")
    return {
        "generator": submit.details.get("generator") if submit else None,
        "per_scenario": ctx.stack_settings,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        say(describe(args.quick))
        return 0
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
