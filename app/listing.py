"""``GET /v1/dags``: filtered, newest-first keyset pagination, each shape served by an index.

Which index drives the scan depends on the filters (forced, so the plan does not
depend on the optimizer's statistics):
- a label selector: ``dag_labels`` (tenant, key, value, created_at, dag_id);
- states: one range of ``ix_dags_tenant_state_created`` per state, merged;
- otherwise ``ix_dags_tenant_created``.
Other filters are checked on the rows the driving index yields. The page token is the
(created_at, id) of the last row returned plus a digest of the filters, so a page never
shifts when new DAGs arrive and a token cannot be replayed against another query.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from aimtp.db.records import DagRecord
from aimtp.states import DagState


@dataclass(frozen=True)
class DagFilter:
    states: tuple[DagState, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    name_prefix: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None

    def digest(self) -> str:
        return hashlib.sha256(repr(self).encode()).hexdigest()[:16]


class InvalidPageToken(ValueError):
    pass


class _Token(msgspec.Struct, array_like=True):
    created_at: datetime
    id: str
    filters: str


def encode_token(dag: DagRecord, filters: DagFilter) -> str:
    raw = msgspec.json.encode(_Token(dag.created_at, dag.id, filters.digest()))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, filters: DagFilter) -> _Token:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        decoded = msgspec.json.decode(raw, type=_Token)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise InvalidPageToken("page_token is not a token this API issued") from None
    if decoded.filters != filters.digest():
        raise InvalidPageToken("page_token belongs to a query with other filters")
    return decoded


async def list_dags(
    conn: AsyncConnection,
    tenant: str,
    filters: DagFilter,
    limit: int,
    page_token: str | None,
) -> tuple[list[DagRecord], str | None]:
    """One page of the tenant's DAGs, newest first, and the token of the next page."""
    after = decode_token(page_token, filters) if page_token else None
    sql, params = build_list_query(tenant, filters, limit + 1, after)
    rows = [DagRecord.from_row(row) for row in await conn.execute(text(sql), params)]
    if len(rows) <= limit:
        return rows, None
    page = rows[:limit]
    return page, encode_token(page[-1], filters)


def build_list_query(
    tenant: str, filters: DagFilter, limit: int, after: _Token | None
) -> tuple[str, dict[str, Any]]:
    """The SQL and parameters of one page (``limit`` rows) after the ``after`` cursor."""
    params: dict[str, Any] = {"tenant": tenant, "limit": limit}
    conditions = _row_conditions(filters, params, label_driven=bool(filters.labels))
    if after is not None:
        params["after_created"], params["after_id"] = after.created_at, after.id

    if filters.labels:
        key, value = filters.labels[0]
        params["label_key"], params["label_value"] = key, value
        keyset = _keyset("l.created_at", "l.dag_id") if after else "TRUE"
        sql = (
            "SELECT d.* FROM dag_labels l FORCE INDEX (PRIMARY) JOIN dags d ON d.id = l.dag_id "
            "WHERE l.tenant = :tenant AND l.label_key = :label_key "
            f"AND l.label_value = :label_value AND {keyset} AND {conditions} "
            "ORDER BY l.created_at DESC, l.dag_id DESC LIMIT :limit"
        )
    else:
        keyset = _keyset("d.created_at", "d.id") if after else "TRUE"
        states = filters.states or (None,)
        branches = []
        for i, state in enumerate(states):
            state_condition, index = "TRUE", "ix_dags_tenant_created"
            if state is not None:
                params[f"state_{i}"] = state.value
                state_condition, index = f"d.state = :state_{i}", "ix_dags_tenant_state_created"
            branches.append(
                f"(SELECT d.* FROM dags d FORCE INDEX ({index}) WHERE d.tenant = :tenant "
                f"AND {state_condition} AND {keyset} AND {conditions} "
                "ORDER BY d.created_at DESC, d.id DESC LIMIT :limit)"
            )
        sql = (
            branches[0]
            if len(branches) == 1
            else f"SELECT * FROM ({' UNION ALL '.join(branches)}) u "
            "ORDER BY u.created_at DESC, u.id DESC LIMIT :limit"
        )
    return sql, params


def _keyset(created: str, ident: str) -> str:
    return f"({created} < :after_created OR ({created} = :after_created AND {ident} < :after_id))"


def _row_conditions(filters: DagFilter, params: dict[str, Any], *, label_driven: bool) -> str:
    conditions = ["TRUE"]
    if label_driven and filters.states:
        names = []
        for i, state in enumerate(filters.states):
            params[f"state_{i}"] = state.value
            names.append(f":state_{i}")
        conditions.append(f"d.state IN ({', '.join(names)})")
    if filters.name_prefix:
        escaped = filters.name_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        params["name_prefix"] = escaped + "%"
        conditions.append("d.name LIKE :name_prefix")
    if filters.created_after is not None:
        params["created_after"] = filters.created_after
        conditions.append("d.created_at > :created_after")
    if filters.created_before is not None:
        params["created_before"] = filters.created_before
        conditions.append("d.created_at < :created_before")
    for i, (key, value) in enumerate(filters.labels[1:] if label_driven else filters.labels):
        params[f"lk_{i}"], params[f"lv_{i}"] = key, value
        # A primary-key lookup: the row's own (created_at, id) completes the key.
        conditions.append(
            "EXISTS (SELECT 1 FROM dag_labels x WHERE x.tenant = d.tenant "
            f"AND x.label_key = :lk_{i} AND x.label_value = :lv_{i} "
            "AND x.created_at = d.created_at AND x.dag_id = d.id)"
        )
    return " AND ".join(conditions)
