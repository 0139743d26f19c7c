"""The ``aimtp`` command: every process and operator task behind one console script.

Process packages are imported inside their command so that each process loads only
what it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

from aimtp.settings import DatabaseSettings, all_settings, load

Handler = Callable[[argparse.Namespace], int]


def _server(args: argparse.Namespace) -> int:
    from app.serve import serve

    return serve(args.host, args.port)


def _db_init(args: argparse.Namespace) -> int:
    from aimtp.db import apply_schema, create_engine

    async def run() -> None:
        engine = create_engine(load(DatabaseSettings), pool_size=1)
        try:
            await apply_schema(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())
    print("schema applied")
    return 0


def _config(args: argparse.Namespace) -> int:
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

    commands.add_parser("config", help="print the effective settings").set_defaults(handler=_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
