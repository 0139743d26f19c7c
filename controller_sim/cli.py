"""Command line of the reference Controller (wired into ``aimtp controller-sim``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

import msgspec

from controller_sim import logs
from controller_sim.faults import FaultConfig, FaultError
from controller_sim.server import ControllerSim, SimConfig

log = logging.getLogger(__name__)


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also rejects NaN
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the reference Controller's options to ``parser``."""
    env = os.environ
    net = parser.add_argument_group("server")
    net.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    net.add_argument(
        "--port",
        type=int,
        default=env.get("AIMTP_CONTROLLER_PORT", "8001"),
        help="port to bind (default $AIMTP_CONTROLLER_PORT or 8001)",
    )
    net.add_argument(
        "--token",
        default=env.get("AIMTP_CONTROLLER_TOKEN", ""),
        help="bearer token required on /v1 calls (default $AIMTP_CONTROLLER_TOKEN; empty: none)",
    )
    net.add_argument(
        "--callback-token",
        default=env.get("AIMTP_CONTROLLER_CALLBACK_TOKEN"),
        help="bearer token sent with status callbacks "
        "(default $AIMTP_CONTROLLER_CALLBACK_TOKEN, else --token)",
    )
    net.add_argument("--log-level", default="INFO", help="logging level (default %(default)s)")

    sim = parser.add_argument_group("simulation")
    sim.add_argument(
        "--default-task-seconds",
        type=_non_negative,
        default=1.0,
        help="duration of a task without a sim.aimtp.io/duration-seconds annotation",
    )
    sim.add_argument(
        "--time-scale",
        type=_non_negative,
        default=1.0,
        help="multiply every task duration by this (0.01 runs 100x faster)",
    )
    sim.add_argument("--callback-attempts", type=_positive_int, default=4)
    sim.add_argument("--callback-timeout-seconds", type=_non_negative, default=5.0)
    sim.add_argument("--callback-max-connections", type=_positive_int, default=64)

    faults = parser.add_argument_group("faults (also settable at runtime via /admin/faults)")
    faults.add_argument("--latency-ms", type=_non_negative, default=0.0)
    faults.add_argument("--error-rate", type=_non_negative, default=0.0, help="0..1")
    faults.add_argument("--unavailable-for-seconds", type=_non_negative, default=0.0)
    faults.add_argument("--hang", action="store_true", help="never answer /v1 until cleared")
    faults.add_argument("--hang-for-seconds", type=_non_negative, default=0.0)
    faults.add_argument("--reject-image", metavar="REGEX", default=None)
    faults.add_argument("--fail-task", metavar="TASK", default=None)
    faults.add_argument("--max-creations-per-second", type=float, default=None)


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """Build the SimConfig described by parsed arguments; FaultError when they are invalid."""
    fault_fields = {
        "latency_ms": args.latency_ms,
        "error_rate": args.error_rate,
        "unavailable_for_seconds": args.unavailable_for_seconds,
        "hang": args.hang,
        "hang_for_seconds": args.hang_for_seconds,
        "reject_image_pattern": args.reject_image,
        "fail_task": args.fail_task,
        "max_creations_per_second": args.max_creations_per_second,
    }
    try:
        faults = msgspec.convert(fault_fields, FaultConfig)
    except msgspec.ValidationError as exc:
        raise FaultError(str(exc)) from exc
    callback_token = args.callback_token if args.callback_token is not None else args.token
    return SimConfig(
        token=args.token,
        callback_token=callback_token,
        default_task_seconds=args.default_task_seconds,
        time_scale=args.time_scale,
        faults=faults,
        callback_attempts=args.callback_attempts,
        callback_timeout_seconds=args.callback_timeout_seconds,
        callback_max_connections=args.callback_max_connections,
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; 0 on a clean stop, 1 when it cannot start, 2 on bad faults."""
    logs.configure(args.log_level)
    try:
        config = config_from_args(args)
        asyncio.run(_serve(config, args.host, args.port))
    except FaultError as exc:
        log.error("invalid fault options", extra={"error": str(exc)})
        return 2
    except OSError as exc:
        log.error("cannot serve", extra={"host": args.host, "port": args.port, "error": str(exc)})
        return 1
    return 0


async def _serve(config: SimConfig, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        async with ControllerSim(config, host=host, port=port) as sim:
            log.info(
                "controller sim listening",
                extra={
                    "url": sim.url,
                    "auth": bool(config.token),
                    "faults": sim.state.faults.snapshot(),
                },
            )
            await stop.wait()
            log.info("controller sim stopping")
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
