"""Named SQL blocks from ``queries.sql``, parsed once into SQLAlchemy text clauses."""

from __future__ import annotations

import re
from pathlib import Path
from types import MappingProxyType

from sqlalchemy import TextClause, text

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$")


def load_queries(path: Path) -> MappingProxyType[str, TextClause]:
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in path.read_text().splitlines():
        if match := _NAME.match(line):
            current = blocks.setdefault(match.group(1), [])
        elif current is not None and not line.lstrip().startswith("--"):
            current.append(line)
    return MappingProxyType(
        {name: text("\n".join(body).strip().rstrip(";")) for name, body in blocks.items()}
    )


QUERIES = load_queries(Path(__file__).with_name("queries.sql"))
