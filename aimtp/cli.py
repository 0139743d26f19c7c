"""The ``aimtp`` command: every process and operator task behind one console script.

Process packages are imported inside their command so that each process loads only
what it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import msgspec

from aimtp.settings import DatabaseSettings, all_settings, load

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

Handler = Callable[[argparse.Namespace], int]


def _server(args: argparse.Namespace) -> int:
    from app.serve import serve

    return serve(args.host, args.port)


def _db_init(args: argparse.Namespace) -> int:
    from aimtp.db import apply_schema

    async def init(engine: AsyncEngine) -> int:
        await apply_schema(engine)
        print("schema applied")
        return 0

    return _with_engine(init)


def _with_engine(work: Callable[[AsyncEngine], Awaitable[int]]) -> int:
    from aimtp.db import create_engine

    async def run() -> int:
        engine = create_engine(load(DatabaseSettings), pool_size=1)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _relay(args: argparse.Namespace) -> int:
    from outbox import run_relay

    return run_relay()


def _trigger(args: argparse.Namespace) -> int:
    from consumers import run_trigger

    return run_trigger()


def _asyncapi(args: argparse.Namespace) -> int:
    from aimtp.asyncapi import asyncapi_json
    from aimtp.settings import KafkaSettings

    # --defaults ignores AIMTP_* overrides: that is the document checked into docs/.
    settings = KafkaSettings() if args.defaults else load(KafkaSettings)
    sys.stdout.write(asyncapi_json(settings))
    return 0


def _watcher(args: argparse.Namespace) -> int:
    from sweeper import run_watcher

    return run_watcher(once=args.once)


def _kafka_init(args: argparse.Namespace) -> int:
    from aimtp.kafka import ensure_topics
    from aimtp.settings import KafkaSettings

    settings = load(KafkaSettings)
    created = asyncio.run(ensure_topics(settings))
    for name in (settings.kafka_topic, settings.kafka_dlq_topic):
        print(f"{name}: {'created' if name in created else 'exists'}")
    return 0


def _outbox_parked(args: argparse.Namespace) -> int:
    from aimtp.outbox_admin import list_parked

    async def show(engine: AsyncEngine) -> int:
        rows = await list_parked(engine)
        if args.output == "json":
            print(msgspec.json.encode(rows).decode())
            return 0
        if not rows:
            print("no parked rows")
        for row in rows:
            print(
                f"{row.id}\t{row.dag_id}\t{row.event_type}\t{row.created_at:%Y-%m-%dT%H:%M:%S}Z\t{row.reason}"
            )
        return 0

    return _with_engine(show)


def _outbox_release(args: argparse.Namespace) -> int:
    from aimtp.outbox_admin import release_parked

    async def release(engine: AsyncEngine) -> int:
        if await release_parked(engine, args.id, drop=args.drop):
            print(f"outbox row {args.id} {'dropped' if args.drop else 're-queued'}")
            return 0
        print(f"outbox row {args.id} is not parked", file=sys.stderr)
        return 1

    return _with_engine(release)


def _controller_sim(args: argparse.Namespace) -> int:
    from controller_sim.cli import run

    return run(args)


def settings_markdown() -> str:
    """The configuration table of the README, generated from the settings declarations."""
    lines = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for kind in all_settings():
        for variable, default, help_text in kind.describe():
            shown = f"`{default}`" if default != "" else "(empty)"
            lines.append(f"| `{variable}` | {shown} | {help_text} |")
    return "\n".join(lines)


def _config(args: argparse.Namespace) -> int:
    if args.markdown:
        print(settings_markdown())
        return 0
    for kind in all_settings():
        current = kind.from_env()
        for variable, default, help_text in kind.describe():
            field = variable.removeprefix(kind.env_prefix).lower()
            value = getattr(current, field)
            if "token" in field and value:
                value = "<set>"
            print(f"{variable}={value}\t# {help_text} (default: {default!r})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aimtp", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    server = commands.add_parser("server", help="run aimtp-server, the HTTP API")
    server.add_argument("--host", help="bind address (default AIMTP_HTTP_HOST)")
    server.add_argument("--port", type=int, help="port (default AIMTP_HTTP_PORT)")
    server.set_defaults(handler=_server)

    db = commands.add_parser("db", help="database tasks")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="TASK")
    db_commands.add_parser("init", help="apply db/schema.sql (idempotent)").set_defaults(
        handler=_db_init
    )

    commands.add_parser("relay", help="run aimtp-relay, the outbox publisher").set_defaults(
        handler=_relay
    )

    commands.add_parser(
        "trigger", help="run aimtp-trigger, which hands DAGs to the Controller"
    ).set_defaults(handler=_trigger)

    asyncapi = commands.add_parser(
        "asyncapi", help="print the AsyncAPI document of the Kafka topics (JSON)"
    )
    asyncapi.add_argument(
        "--defaults",
        action="store_true",
        help="document the default topic names and bootstrap (as in docs/asyncapi.json)",
    )
    asyncapi.set_defaults(handler=_asyncapi)

    watcher = commands.add_parser("watcher", help="run aimtp-watcher, the deadline sweeper")
    watcher.add_argument(
        "--once", action="store_true", help="one sweep, then exit (the CronJob form)"
    )
    watcher.set_defaults(handler=_watcher)

    kafka = commands.add_parser("kafka", help="Kafka tasks")
    kafka_commands = kafka.add_subparsers(dest="kafka_command", required=True, metavar="TASK")
    kafka_commands.add_parser(
        "init", help="create the events topic and its DLQ if missing"
    ).set_defaults(handler=_kafka_init)

    outbox = commands.add_parser("outbox", help="inspect and repair the outbox")
    outbox_commands = outbox.add_subparsers(dest="outbox_command", required=True, metavar="TASK")
    parked = outbox_commands.add_parser("parked", help="list rows the broker refused")
    parked.add_argument("--output", choices=["table", "json"], default="table")
    parked.set_defaults(handler=_outbox_parked)
    release = outbox_commands.add_parser("release", help="re-queue a parked row after a fix")
    release.add_argument("id", type=int, help="outbox row id (see `aimtp outbox parked`)")
    release.add_argument("--drop", action="store_true", help="discard the row instead (recorded)")
    release.set_defaults(handler=_outbox_release)

    from controller_sim.cli import add_arguments as add_controller_sim_arguments

    sim = commands.add_parser(
        "controller-sim", help="run the reference Controller (local runs and tests)"
    )
    add_controller_sim_arguments(sim)
    sim.set_defaults(handler=_controller_sim)

    from aimtp.usercli import add_user_commands

    add_user_commands(commands)

    config = commands.add_parser("config", help="print the effective settings")
    config.add_argument(
        "--markdown", action="store_true", help="print the documented defaults as a table"
    )
    config.set_defaults(handler=_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
