"""Scenario 7: ``GET /v1/dags`` over a million rows, first pages and deep pages, filtered."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import urlencode

from bench.dataset import ListDataset, ensure_dataset
from bench.report import Load, ScenarioResult, Target
from bench.scenarios.base import Context, CpuWindow, Scenario
from bench.stack import LIST_TENANTS, Stack, list_token
from bench.stats import LatencySummary
from bench.vegeta import Attack, Hit
from bench.vegeta import Target as HttpTarget

PAGE_SIZE: Final = 50
# Filter shapes, each served by a different index path in app/listing.py.
SHAPES: Final[dict[str, dict[str, str]]] = {
    "all": {},
    "state": {"state": "SUCCEEDED"},
    "label": {"label": "team=nlp"},
    "state+label": {"state": "FAILED", "label": "team=vision"},
}
DEEP_TENANTS: Final = LIST_TENANTS[:2]


@dataclass(frozen=True)
class Params:
    per_tenant: int
    rate: float
    duration: float
    warmup: float
    depth: int
    """Pages followed (``next_page_token``) to reach the deep page."""


PARAMS = {
    False: Params(per_tenant=100_000, rate=100, duration=20, warmup=5, depth=100),
    True: Params(per_tenant=2_000, rate=50, duration=3, warmup=1, depth=5),
}


def _load(quick: bool) -> Load:
    p = PARAMS[quick]
    return Load(
        offered=f"{p.rate:g} req/s, open loop",
        duration=f"{p.duration:g} s (after {p.warmup:g} s warm-up)",
        concurrency=f"{len(LIST_TENANTS)} tenants x >= {p.per_tenant:,} DAGs; "
        f"{len(SHAPES)} filter shapes, first page and page {p.depth + 1}",
    )


def _url(stack: Stack, shape: str, token: str | None = None) -> str:
    query = {**SHAPES[shape], "limit": str(PAGE_SIZE)}
    if token:
        query["page_token"] = token
    return f"{stack.api_url}/v1/dags?{urlencode(query)}"


async def _deep_token(stack: Stack, tenant: str, shape: str, depth: int) -> tuple[str, int]:
    """Follow ``next_page_token`` ``depth`` times (fewer if the listing ends first)."""
    token: str | None = None
    deepest = ""
    pages = 0
    for _ in range(depth):
        page = await stack.get_json(_url(stack, shape, token), token=list_token(tenant))
        token = page["next_page_token"]
        if not token:
            break
        deepest, pages = token, pages + 1
    return deepest, pages


async def _run(ctx: Context, result: ScenarioResult) -> None:
    p = PARAMS[ctx.quick]
    dataset = ListDataset(tenants=LIST_TENANTS, per_tenant=p.per_tenant)
    loaded = await ensure_dataset(ctx.db, dataset, ctx.say)
    async with ctx.stack(result, ["server"]) as stack:
        kinds: dict[str, str] = {}
        targets: list[HttpTarget] = []
        for shape in SHAPES:
            for tenant in LIST_TENANTS:
                url = _url(stack, shape)
                kinds[url] = f"first:{shape}"
                targets.append(HttpTarget("GET", url, stack.auth(list_token(tenant))))
        depths: dict[str, int] = {}
        for shape in SHAPES:
            for tenant in DEEP_TENANTS:
                token, pages = await _deep_token(stack, tenant, shape, p.depth)
                depths[f"{tenant} {shape}"] = pages
                if not pages:
                    continue  # a single page: there is no deep page to ask for
                url = _url(stack, shape, token)
                kinds[url] = f"deep:{shape}"
                targets.append(HttpTarget("GET", url, stack.auth(list_token(tenant))))
        await ctx.vegeta.attack(Attack("list-warmup", targets, rate=p.rate, duration=p.warmup))
        async with CpuWindow(stack) as cpu:
            outcome = await ctx.vegeta.attack(
                Attack("list", targets, rate=p.rate, duration=p.duration)
            )
    # Tenants share first-page URLs; a kind depends only on the shape and the depth.
    by_kind: dict[str, list[Hit]] = {}
    for hit in outcome.hits:
        by_kind.setdefault(kinds.get(hit.url, "unknown"), []).append(hit)
    latency = outcome.latency()
    first = [h for kind, hits in by_kind.items() if kind.startswith("first:") for h in hits]
    deep = [h for kind, hits in by_kind.items() if kind.startswith("deep:") for h in hits]
    result.figures.update(
        {
            "p99_ms": round(latency.p99_ms, 2),
            "p50_ms": round(latency.p50_ms, 2),
            "first_page_p99_ms": round(outcome.latency(first).p99_ms, 2) if first else None,
            "deep_page_p99_ms": round(outcome.latency(deep).p99_ms, 2) if deep else None,
            "errors": outcome.errors(200),
            "sent_rps": round(outcome.sent_rate(), 1),
            "rows": loaded["rows"],
        }
    )
    result.details.update(
        {
            "dataset": loaded,
            "dataset_reuse": (
                "reused when a dataset of the same shape (schema, generator, spec, tenants) "
                "with at least as many rows is already loaded; otherwise dropped and loaded"
            ),
            "page_size": PAGE_SIZE,
            "deep_pages_followed": depths,
            "by_kind": {
                kind: LatencySummary.of_seconds(h.latency for h in hits).as_dict()
                for kind, hits in sorted(by_kind.items())
            },
            "statuses": outcome.status_counts(),
            "cpu": cpu.as_dict(),
        }
    )


LISTING = Scenario(
    name="list",
    title="List at scale (1M DAGs, 10 tenants)",
    method=(
        "client latency of GET /v1/dags (limit 50) cycling over every tenant x filter shape "
        "(none, state, label, state+label) first page, plus the page reached by following "
        "next_page_token 'depth' times for two tenants; p99 over all requests, also split "
        "first/deep. The dataset (terminal DAGs over 30 days, 2 labels each) is loaded by "
        "multi-row INSERTs once and reused across runs."
    ),
    targets=(Target("list.p99_ms", "<=", 20), Target("list.errors", "==", 0)),
    load=_load,
    run=_run,
)
