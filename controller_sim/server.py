"""HTTP routes of the reference Controller, its app factory, and a runner for tests/CLI."""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

from aimtp.controller import WORKLOADS_PATH, Problem, WorkloadRequest
from controller_sim.callbacks import CallbackSender
from controller_sim.faults import FaultConfig, FaultError, Faults, retry_after_header
from controller_sim.workloads import SpecError, WorkloadStore, plan_from_spec

log = logging.getLogger(__name__)

_encoder: Final = msgspec.json.Encoder()
_request_decoder: Final = msgspec.json.Decoder(WorkloadRequest)
_patch_decoder: Final = msgspec.json.Decoder(dict[str, Any])


@dataclass(frozen=True, slots=True, kw_only=True)
class SimConfig:
    """Everything the reference Controller can be configured with."""

    token: str = ""
    """Bearer token required on /v1 calls; empty disables auth."""
    callback_token: str = ""
    """Bearer token sent with status callbacks; empty sends none."""
    default_task_seconds: float = 1.0
    time_scale: float = 1.0
    faults: FaultConfig = field(default_factory=FaultConfig)
    callback_attempts: int = 4
    callback_backoff_seconds: float = 0.2
    callback_timeout_seconds: float = 5.0
    callback_max_connections: int = 64


@dataclass(frozen=True, slots=True)
class SimState:
    """The live objects behind one app, reachable from handlers and tests."""

    config: SimConfig
    faults: Faults
    callbacks: CallbackSender
    store: WorkloadStore


STATE: Final = web.AppKey("controller_sim_state", SimState)


def create_app(config: SimConfig | None = None) -> web.Application:
    """Build the reference Controller application."""
    config = config or SimConfig()
    faults = Faults(config.faults)
    callbacks = CallbackSender(
        config.callback_token,
        attempts=config.callback_attempts,
        backoff_seconds=config.callback_backoff_seconds,
        timeout_seconds=config.callback_timeout_seconds,
        max_connections=config.callback_max_connections,
    )
    store = WorkloadStore(
        faults,
        callbacks,
        default_task_seconds=config.default_task_seconds,
        time_scale=config.time_scale,
    )
    app = web.Application(middlewares=[_v1_gate])
    app[STATE] = SimState(config=config, faults=faults, callbacks=callbacks, store=store)
    app.router.add_put(WORKLOADS_PATH + "/{dag_id}", _put_workload)
    app.router.add_get(WORKLOADS_PATH + "/{dag_id}", _get_workload)
    app.router.add_delete(WORKLOADS_PATH + "/{dag_id}", _delete_workload)
    app.router.add_get(WORKLOADS_PATH, _list_workloads)
    app.router.add_get("/admin/faults", _get_faults)
    app.router.add_post("/admin/faults", _patch_faults)
    app.router.add_delete("/admin/faults", _clear_faults)
    app.router.add_post("/admin/forget/{dag_id}", _forget)
    app.router.add_get("/admin/creations", _creations)
    app.router.add_get("/admin/requests", _requests)
    app.router.add_get("/admin/first-put", _first_put)
    app.router.add_get("/admin/callbacks", _callback_stats)
    app.router.add_get("/healthz", _healthz)
    app.on_startup.append(_on_startup)
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_on_cleanup)
    return app


async def _on_startup(app: web.Application) -> None:
    await app[STATE].callbacks.start()


async def _on_shutdown(app: web.Application) -> None:
    # Hung requests would otherwise hold the graceful shutdown for its whole timeout.
    app[STATE].faults.release_hung()


async def _on_cleanup(app: web.Application) -> None:
    state = app[STATE]
    await state.store.close()
    await state.callbacks.close()


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(data), status=status, content_type="application/json")


def _problem(
    status: int, title: str, detail: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = _encoder.encode(Problem(title=title, status=status, detail=detail))
    return web.Response(
        body=body, status=status, headers=headers, content_type="application/problem+json"
    )


@web.middleware
async def _v1_gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count PUTs, then apply the injected faults and the auth check to /v1 calls."""
    if not request.path.startswith("/v1/"):
        return await handler(request)
    state = request.app[STATE]
    dag_id = request.match_info.get("dag_id")
    if request.method == "PUT" and dag_id is not None:
        state.store.note_put(dag_id)
    await state.faults.delay()
    outage = state.faults.outage()
    if outage is not None:
        title = "Service Unavailable" if outage.status == 503 else "Internal Server Error"
        return _problem(outage.status, title, outage.detail, retry_after_header(outage.retry_after))
    token = state.config.token
    if token and not hmac.compare_digest(
        request.headers.get("Authorization", "").encode(), f"Bearer {token}".encode()
    ):
        return _problem(
            401,
            "Unauthorized",
            "missing or invalid bearer token",
            {"WWW-Authenticate": 'Bearer realm="controller"'},
        )
    return await handler(request)


async def _put_workload(request: web.Request) -> web.Response:
    state = request.app[STATE]
    dag_id = request.match_info["dag_id"]
    try:
        req = _request_decoder.decode(await request.read())
    except msgspec.DecodeError as exc:
        return _problem(400, "Bad Request", f"invalid WorkloadRequest: {exc}")
    if req.dag_id != dag_id:
        return _problem(400, "Bad Request", f"body dag_id {req.dag_id!r} != path {dag_id!r}")
    # From here to create() nothing awaits, so two concurrent PUTs cannot both create.
    existing = state.store.existing_for(req)
    if existing is not None:
        return _json(existing.state, 200)
    try:
        plan = plan_from_spec(req.spec, state.store.default_task_seconds)
    except SpecError as exc:
        return _problem(422, "Unprocessable Content", f"invalid DAG spec: {exc}")
    rejected = state.faults.rejected_image(plan.images)
    if rejected is not None:
        task, image = rejected
        return _problem(
            422, "Unprocessable Content", f"task {task!r}: image {image!r} is not allowed"
        )
    wait = state.faults.creation_wait()
    if wait is not None:
        detail = "creation rate limit exceeded, retry later"
        return _problem(503, "Service Unavailable", detail, retry_after_header(wait))
    wl = state.store.create(req, plan)
    return _json(wl.state, 201)


async def _get_workload(request: web.Request) -> web.Response:
    dag_id = request.match_info["dag_id"]
    wl = request.app[STATE].store.get(dag_id)
    if wl is None:
        return _problem(404, "Not Found", f"no workload for dag {dag_id!r}")
    return _json(wl.state)


async def _delete_workload(request: web.Request) -> web.Response:
    dag_id = request.match_info["dag_id"]
    wl = request.app[STATE].store.delete(dag_id)
    if wl is None:
        return _problem(404, "Not Found", f"no workload for dag {dag_id!r}")
    return _json(wl.state)


async def _list_workloads(request: web.Request) -> web.Response:
    return _json([wl.state for wl in request.app[STATE].store])


async def _get_faults(request: web.Request) -> web.Response:
    return _json(request.app[STATE].faults.snapshot())


async def _patch_faults(request: web.Request) -> web.Response:
    faults = request.app[STATE].faults
    try:
        patch = _patch_decoder.decode(await request.read())
        faults.update(patch)
    except (msgspec.DecodeError, FaultError) as exc:
        return _problem(400, "Bad Request", f"invalid faults: {exc}")
    log.info("faults updated", extra={"faults": patch})
    return _json(faults.snapshot())


async def _clear_faults(request: web.Request) -> web.Response:
    faults = request.app[STATE].faults
    faults.clear()
    log.info("faults cleared")
    return _json(faults.snapshot())


async def _forget(request: web.Request) -> web.Response:
    dag_id = request.match_info["dag_id"]
    if not request.app[STATE].store.forget(dag_id):
        return _problem(404, "Not Found", f"no workload for dag {dag_id!r}")
    return _json({"dag_id": dag_id, "forgotten": True})


async def _creations(request: web.Request) -> web.Response:
    return _json(request.app[STATE].store.creations)


async def _requests(request: web.Request) -> web.Response:
    return _json(request.app[STATE].store.requests)


async def _first_put(request: web.Request) -> web.Response:
    return _json(request.app[STATE].store.first_put)


async def _callback_stats(request: web.Request) -> web.Response:
    callbacks = request.app[STATE].callbacks
    return _json(
        {
            "delivered": callbacks.delivered,
            "dropped": callbacks.dropped,
            "pending": callbacks.pending,
        }
    )


async def _healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


class ControllerSim:
    """Serves the reference Controller on ``host:port`` inside the running event loop.

    ``port=0`` picks a free port; ``url`` tells which after ``start()``.
    """

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        shutdown_timeout: float = 5.0,
    ) -> None:
        self.app = create_app(config)
        self._host = host
        self._port = port
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=shutdown_timeout)
        self._url: str | None = None

    @property
    def state(self) -> SimState:
        return self.app[STATE]

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:43121``."""
        if self._url is None:
            raise RuntimeError("ControllerSim is not started")
        return self._url

    async def start(self) -> None:
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self._host, self._port).start()
        except BaseException:
            await self._runner.cleanup()
            raise
        host, port = self._runner.addresses[0][:2]
        self._url = f"http://{_url_host(host)}:{port}"

    async def stop(self) -> None:
        await self._runner.cleanup()
        self._url = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
