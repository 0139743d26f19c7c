from __future__ import annotations

from datetime import datetime

from outbox.relay import OutboxRow, waves


def row(id_: int, dag: str) -> OutboxRow:
    return OutboxRow(
        id_, f"e{id_}", dag, "dag.submitted", "server", b"{}", None, datetime(2026, 1, 1)
    )


def test_one_row_per_dag_is_a_single_wave() -> None:
    rows = [row(1, "a"), row(2, "b"), row(3, "c")]
    assert waves(rows) == [rows]


def test_a_dags_later_rows_go_in_later_waves_in_id_order() -> None:
    rows = [row(1, "a"), row(2, "a"), row(3, "b"), row(4, "a"), row(5, "b")]
    assert [[r.id for r in wave] for wave in waves(rows)] == [[1, 3], [2, 5], [4]]


def test_no_wave_holds_two_rows_of_one_dag() -> None:
    rows = [row(i, "abc"[i % 3]) for i in range(30)]
    for wave in waves(rows):
        assert len({r.dag_id for r in wave}) == len(wave)
    assert sorted(r.id for wave in waves(rows) for r in wave) == list(range(30))


def test_empty_batch_has_no_waves() -> None:
    assert waves([]) == []
