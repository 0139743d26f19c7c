"""The user commands of ``aimtp``: submit, get, list, cancel, retry, events.

Human tables by default, ``--output json`` for scripts. The server address and token
come from ``--server`` / ``--token`` or ``AIMTP_URL`` / ``AIMTP_TOKEN``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import msgspec
import yaml

from aimtp.apiclient import AimtpClient, ApiError, Unreachable, WatchUnavailable, watch_dag

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT"})
Command = Callable[[AimtpClient, argparse.Namespace], Awaitable[int]]


def add_user_commands(commands: Any) -> None:
    """Register the user commands on the ``aimtp`` sub-command parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--server",
        default=os.environ.get("AIMTP_URL", "http://127.0.0.1:8000"),
        help="API base URL (default: $AIMTP_URL or http://127.0.0.1:8000)",
    )
    common.add_argument(
        "--token",
        default=os.environ.get("AIMTP_TOKEN", ""),
        help="tenant bearer token (default: $AIMTP_TOKEN)",
    )
    common.add_argument("--output", choices=["table", "json"], default="table")

    def add(name: str, help_text: str, run: Command) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(
            name, help=help_text, parents=[common]
        )
        parser.set_defaults(handler=lambda args: _run(run, args))
        return parser

    submit = add("submit", "submit a DAG from a JSON or YAML file", _submit)
    submit.add_argument("file", help="DAG spec, .json or .yaml ('-' reads standard input)")
    submit.add_argument(
        "--idempotency-key",
        help="retry-safe key; a random one is used (and reused on retries) if omitted",
    )
    submit.add_argument("--wait", action="store_true", help="follow the DAG until it ends")
    submit.add_argument(
        "--grpc",
        default=os.environ.get("AIMTP_GRPC_URL") or None,
        metavar="HOST:PORT",
        help="with --wait, follow over the gRPC WatchDag stream of this address instead of "
        "polling (default: $AIMTP_GRPC_URL); polls when it cannot be reached",
    )
    submit.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)

    add("get", "show a DAG", _get).add_argument("id")

    listing = add("list", "list DAGs, newest first", _list)
    listing.add_argument("--state", action="append", default=[], help="repeatable")
    listing.add_argument("--label", action="append", default=[], help="key=value, repeatable")
    listing.add_argument("--name-prefix")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--page-token")

    add("cancel", "cancel a DAG", _cancel).add_argument("id")
    add("retry", "run an ended DAG again", _retry).add_argument("id")
    add("events", "a DAG's state history", _events).add_argument("id")


def _run(command: Command, args: argparse.Namespace) -> int:
    async def main() -> int:
        async with AimtpClient(args.server, args.token) as client:
            return await command(client, args)

    try:
        return asyncio.run(main())
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Unreachable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def load_spec(file: str) -> bytes:
    """The spec as JSON bytes, read from JSON or YAML."""
    text = sys.stdin.read() if file == "-" else Path(file).read_text()
    if file.endswith((".yaml", ".yml")):
        return msgspec.json.encode(yaml.safe_load(text))
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return msgspec.json.encode(yaml.safe_load(text))
    return text.encode()


async def _submit(client: AimtpClient, args: argparse.Namespace) -> int:
    dag = await client.submit(load_spec(args.file), idempotency_key=args.idempotency_key)
    if not args.wait:
        _show(args, dag, _dag_table)
        return 0
    if args.output == "table":
        print(f"submitted {dag['id']} ({dag['name']})")
    out = sys.stdout if args.output == "table" else None
    if args.grpc:
        try:
            dag = await follow_stream(client, args.grpc, args.token, dag["id"], out)
        except WatchUnavailable as exc:
            print(f"warning: {exc}; polling instead", file=sys.stderr)
            dag = await follow(client, dag["id"], args.interval, out)
    else:
        dag = await follow(client, dag["id"], args.interval, out)
    if args.output == "json":
        _print_json(dag)
    return 0 if dag["state"] == "SUCCEEDED" else 1


async def follow(
    client: AimtpClient, dag_id: str, interval: float, out: TextIO | None
) -> dict[str, Any]:
    """Poll until the DAG ends, printing each change of its state or task phases."""
    last: tuple[Any, ...] | None = None
    while True:
        dag = await client.get(dag_id)
        tasks = dag.get("tasks") or {}
        snapshot = (dag["state"], tuple(sorted((k, v.get("phase")) for k, v in tasks.items())))
        if out is not None and snapshot != last:
            phases = "  ".join(f"{name}={task.get('phase')}" for name, task in tasks.items())
            print(f"{dag['state']:<11} attempt {dag['attempt']}  {phases}".rstrip(), file=out)
            out.flush()
        last = snapshot
        if dag["state"] in TERMINAL:
            if out is not None and dag.get("error"):
                print(f"error: {dag['error']}", file=out)
            return dag
        await asyncio.sleep(interval)


async def follow_stream(
    client: AimtpClient, target: str, token: str, dag_id: str, out: TextIO | None
) -> dict[str, Any]:
    """Print each transition as the server streams it, and the task phases whenever they
    change (indented below the state); the DAG as it ended."""
    shown: dict[str, str] = {}
    async for change in watch_dag(target, token, dag_id):
        if out is None:
            continue
        if change["kind"] == "tasks":
            if change["tasks"] and change["tasks"] != shown:
                shown = change["tasks"]
                phases = "  ".join(f"{name}={phase}" for name, phase in shown.items())
                print(f"{'':<11} tasks    {phases}", file=out)
        else:
            reason = f": {change['reason']}" if change["reason"] else ""
            print(
                f"{change['to_state']:<11} attempt {change['attempt']}  "
                f"by {change['actor']}{reason}",
                file=out,
            )
        out.flush()
    dag = await client.get(dag_id)
    if out is not None and dag.get("error"):
        print(f"error: {dag['error']}", file=out)
    return dag


async def _get(client: AimtpClient, args: argparse.Namespace) -> int:
    _show(args, await client.get(args.id), _dag_table)
    return 0


async def _list(client: AimtpClient, args: argparse.Namespace) -> int:
    page = await client.list(
        states=args.state,
        labels=args.label,
        name_prefix=args.name_prefix,
        limit=args.limit,
        page_token=args.page_token,
    )
    _show(args, page, _page_table)
    return 0


async def _cancel(client: AimtpClient, args: argparse.Namespace) -> int:
    _show(args, await client.cancel(args.id), _dag_table)
    return 0


async def _retry(client: AimtpClient, args: argparse.Namespace) -> int:
    _show(args, await client.retry(args.id), _dag_table)
    return 0


async def _events(client: AimtpClient, args: argparse.Namespace) -> int:
    _show(args, await client.events(args.id), _events_table)
    return 0


# ---------------------------------------------------------------- rendering


def _show(
    args: argparse.Namespace, document: dict[str, Any], table: Callable[[dict[str, Any]], str]
) -> None:
    if args.output == "json":
        _print_json(document)
    else:
        print(table(document))


def _print_json(document: dict[str, Any]) -> None:
    print(json.dumps(document, indent=2, sort_keys=True))


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def _dag_table(dag: dict[str, Any]) -> str:
    lines = [
        render_table(
            ["ID", "NAME", "STATE", "ATTEMPT", "CREATED"],
            [[dag["id"], dag["name"], dag["state"], dag["attempt"], dag["created_at"]]],
        )
    ]
    if dag.get("error"):
        lines.append(f"error: {dag['error']}")
    tasks = dag.get("tasks") or {}
    if tasks:
        lines.append("")
        lines.append(
            render_table(
                ["TASK", "PHASE", "STARTED", "FINISHED"],
                [
                    [name, t.get("phase"), t.get("started_at"), t.get("finished_at")]
                    for name, t in tasks.items()
                ],
            )
        )
    return "\n".join(lines)


def _page_table(page: dict[str, Any]) -> str:
    table = render_table(
        ["ID", "NAME", "STATE", "ATTEMPT", "CREATED"],
        [[d["id"], d["name"], d["state"], d["attempt"], d["created_at"]] for d in page["items"]],
    )
    if page.get("next_page_token"):
        table += f"\n\nmore: --page-token {page['next_page_token']}"
    return table


def _events_table(history: dict[str, Any]) -> str:
    return render_table(
        ["AT", "FROM", "TO", "ATTEMPT", "ACTOR", "REASON"],
        [
            [e["at"], e["from_state"] or "-", e["to_state"], e["attempt"], e["actor"], e["reason"]]
            for e in history["events"]
        ],
    )
