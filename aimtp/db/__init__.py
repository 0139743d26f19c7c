"""Data access: the engine, the schema and the named queries.

Functions here take the caller's connection: the caller owns the transaction, so a
state change and its outbox event can never be split.
"""

from aimtp.db.engine import create_engine, is_database_unavailable, is_reachable
from aimtp.db.queries import QUERIES
from aimtp.db.schema import SCHEMA_PATH, apply_schema, schema_statements, schema_tables

__all__ = [
    "QUERIES",
    "SCHEMA_PATH",
    "apply_schema",
    "create_engine",
    "is_database_unavailable",
    "is_reachable",
    "schema_statements",
    "schema_tables",
]
