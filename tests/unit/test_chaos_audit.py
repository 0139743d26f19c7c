"""The judgements of ``make chaos``: what counts as lost, duplicated or out of order."""

from __future__ import annotations

from aimtp.states import DagState
from chaos.audit import DagOutcome, Verdict, judge_delivery, judge_order

SUCCEEDED = DagOutcome(DagState.SUCCEEDED, None)


def test_a_dag_created_once_is_neither_lost_nor_duplicated() -> None:
    verdict = judge_delivery(["a"], {"a": 1}, {"a": SUCCEEDED})

    assert (verdict.accepted, verdict.terminal, verdict.lost, verdict.duplicates) == (1, 1, [], [])
    assert verdict.ok


def test_an_accepted_dag_never_created_is_lost_unless_failed_with_a_reason() -> None:
    outcomes = {
        "running-nowhere": DagOutcome(DagState.PENDING, None),
        "failed-silently": DagOutcome(DagState.FAILED, None),
        "rejected": DagOutcome(DagState.FAILED, "Controller rejected it: image denied"),
    }
    accepted = ["running-nowhere", "failed-silently", "rejected", "never-stored"]

    verdict = judge_delivery(accepted, {}, outcomes)

    assert verdict.lost == ["running-nowhere", "failed-silently", "never-stored"]
    assert verdict.states == {"ABSENT": 1, "FAILED": 2, "PENDING": 1}
    assert verdict.terminal == 2
    assert not verdict.ok


def test_a_dag_created_twice_is_a_duplicate() -> None:
    verdict = judge_delivery(["a", "b"], {"a": 2, "b": 1}, {"a": SUCCEEDED, "b": SUCCEEDED})

    assert verdict.duplicates == ["a"]
    assert not verdict.ok


def test_a_dag_accepted_twice_under_one_key_is_counted_once() -> None:
    verdict = judge_delivery(["a", "a"], {"a": 1}, {"a": SUCCEEDED})

    assert verdict.accepted == 1


def test_redelivered_events_in_commit_order_are_fine() -> None:
    committed = {"d": ["e1", "e2", "e3"]}
    published = {"d": ["e1", "e2", "e1", "e2", "e3"]}  # a relay died before marking e1, e2

    verdict = judge_order(Verdict(), committed, published)

    assert verdict.order_violations == []
    assert verdict.redelivered_events == 2
    assert verdict.missing_events == 0
    assert verdict.ok


def test_events_out_of_commit_order_are_a_violation() -> None:
    committed = {"d": ["e1", "e2", "e3"], "other": ["o1"]}
    published = {"d": ["e1", "e3", "e2"], "other": ["o1"]}

    verdict = judge_order(Verdict(), committed, published)

    assert verdict.order_violations == ["d"]
    assert not verdict.ok


def test_a_committed_event_that_never_arrived_is_missing() -> None:
    verdict = judge_order(Verdict(), {"d": ["e1", "e2"]}, {"d": ["e1"]})

    assert verdict.missing_events == 1
    assert verdict.order_violations == []
    assert not verdict.ok


def test_records_of_other_topics_users_do_not_count() -> None:
    # A record whose key has no committed events (another writer's) is not judged.
    verdict = judge_order(Verdict(), {"d": ["e1"]}, {"d": ["e1"], "foreign": ["x"]})

    assert verdict.ok
