"""Unit tests for the DAG spec model, its decoding and its validation (no services)."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from aimtp import k8s
from aimtp.spec import (
    DagSpec,
    FieldError,
    Resources,
    SpecError,
    SpecLimits,
    TaskSpec,
    decode_dag_spec,
    task_order,
    validate_dag_spec,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "dag.json"


def task(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "registry.example.com/team/img:1.0", **extra}


def dag(*tasks: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "pipeline", "tasks": list(tasks) or [task("only")], **extra}


def errors_of(body: dict[str, Any] | bytes, limits: SpecLimits | None = None) -> list[FieldError]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(SpecError) as info:
        decode_dag_spec(raw, limits or SpecLimits())
    return info.value.errors


def single_error(body: dict[str, Any] | bytes, limits: SpecLimits | None = None) -> FieldError:
    errors = errors_of(body, limits)
    assert len(errors) == 1, errors
    return errors[0]


# --- the example and the happy path -------------------------------------------------


def test_example_validates_and_round_trips() -> None:
    spec = decode_dag_spec(EXAMPLE.read_bytes())
    assert spec.name == "llm-finetune"
    assert spec.labels["team"] == "nlp"
    assert (spec.timeout_seconds, spec.retries) == (3600, 2)
    train = next(t for t in spec.tasks if t.name == "train")
    assert train.resources == Resources(cpu="32", memory="256Gi", gpu=8)
    assert all("sim.aimtp.io/duration-seconds" in t.annotations for t in spec.tasks)
    assert msgspec.json.decode(msgspec.json.encode(spec), type=DagSpec) == spec


def test_defaults_applied_and_round_trip() -> None:
    spec = decode_dag_spec(json.dumps(dag()).encode())
    only = spec.tasks[0]
    assert (only.command, only.args, only.env, only.depends_on) == ([], [], {}, [])
    assert only.resources == Resources()
    assert (spec.timeout_seconds, spec.retries) == (86400, 0)
    assert decode_dag_spec(msgspec.json.encode(spec)) == spec


def test_mutable_defaults_are_not_shared() -> None:
    first, second = TaskSpec(name="a", image="i"), TaskSpec(name="b", image="i")
    first.env["X"] = "1"
    first.resources.gpu = 2
    assert second.env == {}
    assert second.resources.gpu == 0


def test_task_order_respects_dependencies() -> None:
    body = dag(
        task("report", depends_on=["evaluate", "train"]),
        task("evaluate", depends_on=["train"]),
        task("train", depends_on=["prep-a", "prep-b"]),
        task("prep-a"),
        task("prep-b"),
    )
    spec = decode_dag_spec(json.dumps(body).encode())
    order = task_order(spec)
    assert sorted(order) == sorted(t.name for t in spec.tasks)
    position = {name: i for i, name in enumerate(order)}
    for t in spec.tasks:
        for dep in t.depends_on:
            assert position[dep] < position[t.name]


def test_task_order_of_example() -> None:
    spec = decode_dag_spec(EXAMPLE.read_bytes())
    assert task_order(spec) == ["prepare-data", "train", "evaluate", "register-model"]


# --- decoding errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    "body", [b"", b"{", b"not json", b'{"name": "a",}', b'{"name": "a", "tasks": []} trailing']
)
def test_not_json(body: bytes) -> None:
    error = single_error(body)
    assert error.field == ""
    assert "not valid JSON" in error.message


def test_not_json_reports_position() -> None:
    error = single_error(b'{"name": "a", oops}')
    assert "byte 14" in error.message


def test_invalid_utf8() -> None:
    error = single_error(b'{"name": "\xc3\x28", "tasks": []}')
    assert error.field == ""
    assert "not valid JSON" in error.message
    assert "UTF-8" in error.message


@pytest.mark.parametrize(("body", "got"), [(b"[1, 2]", "array"), (b'"x"', "str"), (b"3", "int")])
def test_top_level_must_be_object(body: bytes, got: str) -> None:
    error = single_error(body)
    assert error.field == ""
    assert "must be a JSON object" in error.message
    assert got in error.message


@pytest.mark.parametrize(
    ("body", "field", "expected", "got"),
    [
        ({"name": 5, "tasks": [task("a")]}, "name", "str", "int"),
        (dag(task("a", resources={"gpu": "8"})), "tasks[0].resources.gpu", "int", "str"),
        (dag(task("a", resources={"gpu": 1.5})), "tasks[0].resources.gpu", "int", "float"),
        (dag(timeout_seconds="60"), "timeout_seconds", "int", "str"),
        (dag(retries=True), "retries", "int", "bool"),
        (dag(task("a", depends_on="b")), "tasks[0].depends_on", "array", "str"),
        (dag(task("a", command=["x", 1])), "tasks[0].command[1]", "str", "int"),
        ({"name": "a", "tasks": {}}, "tasks", "array", "object"),
    ],
)
def test_wrong_types(body: dict[str, Any], field: str, expected: str, got: str) -> None:
    error = single_error(body)
    assert error.field == field
    assert f"Expected `{expected}`, got `{got}`" in error.message


def test_wrong_type_in_map_value() -> None:
    error = single_error(dag(task("a", env={"A": 1})))
    assert error.field == "tasks[0].env"
    assert "Expected `str`, got `int`" in error.message
    assert "map value" in error.message


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "a"}, "tasks"),
        ({"tasks": [task("a")]}, "name"),
        (dag({"name": "a"}), "tasks[0].image"),
        (dag(task("a"), {"image": "i"}), "tasks[1].name"),
    ],
)
def test_missing_required_fields(body: dict[str, Any], field: str) -> None:
    error = single_error(body)
    assert error.field == field
    assert error.message == "required field is missing"


@pytest.mark.parametrize(
    ("body", "field", "allowed"),
    [
        (dag(colour="red"), "colour", "timeout_seconds"),
        (dag(task("a", retries=3)), "tasks[0].retries", "depends_on"),
        (dag(task("a", resources={"gpus": 1})), "tasks[0].resources.gpus", "gpu"),
        (dag(**{"x.y": 1}), '["x.y"]', "name"),
    ],
)
def test_unknown_fields(body: dict[str, Any], field: str, allowed: str) -> None:
    error = single_error(body)
    assert error.field == field
    assert error.message.startswith("unknown field; allowed fields are ")
    assert allowed in error.message


@pytest.mark.parametrize(
    ("body", "field"),
    [
        # Keys crafted to look like msgspec's " - at `$...`" suffix must not fool the parser.
        (dag(**{"x` - at `$.tasks[0]": 1}), '["x` - at `$.tasks[0]"]'),
        (dag(task("a", **{"y` - at `$.tasks": 1})), 'tasks[0]["y` - at `$.tasks"]'),
    ],
)
def test_unknown_field_names_that_mimic_paths(body: dict[str, Any], field: str) -> None:
    error = single_error(body)
    assert error.field == field
    assert error.message.startswith("unknown field")


# --- names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["a", "train", "llm-finetune-2", "0day", "a" * 63, "a-" * 31 + "b"]
)
def test_valid_names(name: str) -> None:
    decode_dag_spec(json.dumps(dag(task(name), name=name)).encode())


@pytest.mark.parametrize(
    "name", ["", "Train", "pre_process", "a" * 64, "-a", "a-", "a.b", "a b", "tráin", "a\n"]
)
def test_invalid_names(name: str) -> None:
    errors = errors_of(dag(task(name), name=name))
    assert [e.field for e in errors] == ["name", "tasks[0].name"]
    for error in errors:
        assert error.message.startswith("must be a DNS-1123 label")
        assert "at most 63 characters" in error.message


def test_name_too_long_message_gives_length() -> None:
    error = single_error(dag(name="a" * 64))
    assert error.field == "name"
    assert error.message.endswith("got 64 characters")


def test_duplicate_task_names() -> None:
    error = single_error(dag(task("prep"), task("train"), task("eval"), task("train")))
    assert error.field == "tasks[3].name"
    assert error.message == "duplicate task name 'train' (first used by tasks[1])"


# --- task count -----------------------------------------------------------------------


def test_zero_tasks() -> None:
    error = single_error({"name": "a", "tasks": []})
    assert error.field == "tasks"
    assert error.message == "must contain between 1 and 500 tasks, got 0"


def test_too_many_tasks() -> None:
    error = single_error({"name": "a", "tasks": [task(f"t{i}") for i in range(501)]})
    assert error.field == "tasks"
    assert error.message == "must contain between 1 and 500 tasks, got 501"


def test_max_tasks_accepted() -> None:
    decode_dag_spec(
        json.dumps({"name": "a", "tasks": [task(f"t{i}") for i in range(500)]}).encode()
    )


def test_custom_max_tasks() -> None:
    body = {"name": "a", "tasks": [task(f"t{i}") for i in range(4)]}
    error = single_error(body, SpecLimits(max_tasks=3))
    assert (error.field, error.message) == ("tasks", "must contain between 1 and 3 tasks, got 4")
    decode_dag_spec(json.dumps(body).encode(), SpecLimits(max_tasks=4))


# --- dependencies ---------------------------------------------------------------------


def test_unknown_dependency() -> None:
    error = single_error(dag(task("a"), task("b"), task("c", depends_on=["foo"])))
    assert error.field == "tasks[2].depends_on[0]"
    assert error.message == "unknown task 'foo'"


def test_self_dependency() -> None:
    error = single_error(dag(task("a"), task("x", depends_on=["a", "x"])))
    assert error.field == "tasks[1].depends_on[1]"
    assert error.message == "task 'x' depends on itself"


def test_duplicate_dependency() -> None:
    error = single_error(dag(task("a"), task("b", depends_on=["a", "a"])))
    assert error.field == "tasks[1].depends_on[1]"
    assert error.message == "duplicate dependency 'a' (already listed at tasks[1].depends_on[0])"


def test_cycle_is_named() -> None:
    body = dag(
        task("start"),
        task("a", depends_on=["start", "c"]),
        task("b", depends_on=["a"]),
        task("c", depends_on=["b"]),
    )
    error = single_error(body)
    assert error.field == "tasks"
    assert error.message == "dependency cycle: a -> c -> b -> a"


def test_two_task_cycle() -> None:
    error = single_error(dag(task("x", depends_on=["y"]), task("y", depends_on=["x"])))
    assert error.field == "tasks"
    assert error.message == "dependency cycle: x -> y -> x"


# --- image, command, env --------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "fragment"),
    [
        ("", "must not be empty"),
        ("registry.example.com/a b:1", "must not contain whitespace"),
        ("img:1\n", "must not contain whitespace"),
        ("r/" + "a" * 1023, "at most 1024 characters, got 1025"),
    ],
)
def test_invalid_image(image: str, fragment: str) -> None:
    error = single_error(dag(task("a", image=image)))
    assert error.field == "tasks[0].image"
    assert fragment in error.message


def test_image_length_limit_inclusive() -> None:
    decode_dag_spec(json.dumps(dag(task("a", image="r/" + "a" * 1022))).encode())


@pytest.mark.parametrize("kind", ["command", "args"])
def test_command_and_args_entries_bounded(kind: str) -> None:
    ok = "x" * (64 * 1024)
    error = single_error(dag(task("a", **{kind: [ok, ok + "y"]})))
    assert error.field == f"tasks[0].{kind}[1]"
    assert "at most 65536 bytes" in error.message


def test_command_entries_count_bounded() -> None:
    error = single_error(dag(task("a", args=["x"] * 1025)))
    assert error.field == "tasks[0].args"
    assert "at most 1024 entries" in error.message


def test_nul_in_args_rejected() -> None:
    error = single_error(dag(task("a", args=["ok", "bad\u0000"])))
    assert error.field == "tasks[0].args[1]"
    assert "NUL" in error.message


@pytest.mark.parametrize("key", ["PATH", "_private", "A1_B2", "lower_case"])
def test_valid_env_names(key: str) -> None:
    decode_dag_spec(json.dumps(dag(task("a", env={key: "v"}))).encode())


@pytest.mark.parametrize("key", ["1ABC", "A-B", "A.B", "", "A B", "ÄNDERN"])
def test_invalid_env_names(key: str) -> None:
    error = single_error(dag(task("a", env={key: "v"})))
    assert error.field == f"tasks[0].env[{json.dumps(key)}]"
    assert "environment variable name" in error.message


def test_env_value_bounded() -> None:
    error = single_error(dag(task("a", env={"BIG": "x" * (64 * 1024 + 1)})))
    assert error.field == 'tasks[0].env["BIG"]'
    assert "at most 65536 bytes" in error.message


# --- resources ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpu", "memory"),
    [("500m", "512Mi"), ("2", "8Gi"), ("1.5", "1e9"), ("0.1", "1k"), ("100m", "1M"), (".5", "1Ki")],
)
def test_valid_quantities_accepted(cpu: str, memory: str) -> None:
    decode_dag_spec(json.dumps(dag(task("a", resources={"cpu": cpu, "memory": memory}))).encode())


def test_invalid_memory() -> None:
    error = single_error(dag(task("a", resources={"memory": "lots"})))
    assert error.field == "tasks[0].resources.memory"
    assert error.message == "must be a Kubernetes quantity such as '512Mi' or '8Gi', got 'lots'"


@pytest.mark.parametrize("cpu", ["", "-1", "1.2.3", "10 Gi", "two", "1K"])
def test_invalid_cpu(cpu: str) -> None:
    error = single_error(dag(task("a", resources={"cpu": cpu})))
    assert error.field == "tasks[0].resources.cpu"
    assert error.message.startswith("must be a Kubernetes quantity such as '500m'")


@pytest.mark.parametrize("kind", ["cpu", "memory"])
def test_zero_quantity_rejected(kind: str) -> None:
    error = single_error(dag(task("a", resources={kind: "0m"})))
    assert error.field == f"tasks[0].resources.{kind}"
    assert error.message == "must be greater than 0, got '0m'"


@pytest.mark.parametrize("gpu", [-1, 65, 10**30])
def test_gpu_out_of_range(gpu: int) -> None:
    error = single_error(dag(task("a", resources={"gpu": gpu})))
    assert error.field == "tasks[0].resources.gpu"
    assert error.message == f"must be between 0 and 64, got {gpu}"


@pytest.mark.parametrize("gpu", [0, 1, 64])
def test_gpu_in_range(gpu: int) -> None:
    decode_dag_spec(json.dumps(dag(task("a", resources={"gpu": gpu}))).encode())


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Decimal("0.5")),
        ("2", Decimal(2)),
        ("1.5", Decimal("1.5")),
        ("8Gi", Decimal(8 * 2**30)),
        ("512Mi", Decimal(512 * 2**20)),
        ("1e3", Decimal(1000)),
        ("1E3", Decimal(1000)),
        ("2e-3", Decimal("0.002")),
        ("1k", Decimal(1000)),
        ("1M", Decimal(10**6)),
        ("1Ki", Decimal(1024)),
        ("1Ei", Decimal(2**60)),
        ("1E", Decimal(10**18)),
        ("250n", Decimal("0.00000025")),
        ("10u", Decimal("0.00001")),
        ("3T", Decimal(3 * 10**12)),
        ("2P", Decimal(2 * 10**15)),
        ("4Ti", Decimal(4 * 2**40)),
        ("4Pi", Decimal(4 * 2**50)),
        ("1.", Decimal(1)),
        (".5Gi", Decimal(2**29)),
        ("0", Decimal(0)),
    ],
)
def test_parse_quantity_valid(text: str, value: Decimal) -> None:
    assert k8s.parse_quantity(text) == value


@pytest.mark.parametrize(
    "text",
    [
        "lots", "", "-1", "+1", "1.2.3", "10 Gi", " 1", "1 ", "1e", "1ki", "1K", "1Gb", ".", "Gi",
        "1e3Gi", "1\n", "\u0661", "8Ei", "1e19", "1e99999999999", "9" * 65,
    ],
)  # fmt: skip
def test_parse_quantity_invalid(text: str) -> None:
    assert k8s.parse_quantity(text) is None


# --- labels and annotations -----------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("team", "nlp"),
        ("app.kubernetes.io/name", "trainer"),
        ("example.com/Tier_1.x", "A-b_c.9"),
        ("k", ""),
        ("a" * 63, "v" * 63),
        ("a" * 253 + "/x", "v"),
    ],
)
def test_valid_labels(key: str, value: str) -> None:
    assert k8s.check_label_key(key) is None
    assert k8s.check_label_value(value) is None
    decode_dag_spec(json.dumps(dag(task("a", labels={key: value}), labels={key: value})).encode())


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("", "empty name"),
        ("a" * 64, "name part"),
        ("-team", "name part"),
        ("team_", "name part"),
        ("has space", "name part"),
        ("/team", "empty prefix"),
        ("Example.com/team", "prefix must be a DNS-1123 subdomain"),
        ("a/b/c", "more than one '/'"),
        ("example.com/", "empty name"),
    ],
)
def test_invalid_label_keys(key: str, fragment: str) -> None:
    message = k8s.check_label_key(key)
    assert message is not None
    assert fragment in message
    error = single_error(dag(labels={key: "v"}))
    assert error.field == f"labels[{json.dumps(key)}]"
    assert error.message == message


def test_long_invalid_key_is_truncated_in_path() -> None:
    key = "a" * 254 + "/team"
    error = single_error(dag(labels={key: "v"}))
    assert error.field == 'labels["' + "a" * 64 + '..."]'
    assert error.message.startswith("label key prefix must be a DNS-1123 subdomain")
    assert error.message.endswith("got 254 characters")


@pytest.mark.parametrize("value", ["v" * 64, "-v", "v-", "a b", "ü", "a/b"])
def test_invalid_label_values(value: str) -> None:
    error = single_error(dag(task("a", labels={"team": value})))
    assert error.field == 'tasks[0].labels["team"]'
    assert error.message.startswith("label value ")
    assert "must be empty or" in error.message


def test_annotation_values_are_free_form() -> None:
    notes = {"example.com/notes": "Anything goes: ünïcode, spaces, /slashes/ and\nnewlines"}
    decode_dag_spec(json.dumps(dag(task("a", annotations=notes), annotations=notes)).encode())


def test_invalid_annotation_key() -> None:
    error = single_error(dag(task("a", annotations={"bad key": "v"})))
    assert error.field == 'tasks[0].annotations["bad key"]'
    assert error.message.startswith("annotation key name part 'bad key' is invalid")
    assert k8s.check_annotation_key("sim.aimtp.io/duration-seconds") is None


def test_annotations_total_size() -> None:
    half = "x" * (128 * 1024)
    ok = {"a": half, "b": half[:-2]}  # keys count too: 1 + 1 + 2 * 128 KiB - 2
    decode_dag_spec(json.dumps(dag(annotations=ok)).encode())
    error = single_error(dag(task("a", annotations={"a": half, "b": half})))
    assert error.field == "tasks[0].annotations"
    assert "at most 262144 bytes" in error.message
    assert error.message.endswith(f"got {2 * 128 * 1024 + 2}")


def test_annotations_size_counts_utf8_bytes() -> None:
    error = single_error(dag(annotations={"k": "é" * (128 * 1024)}))
    assert error.field == "annotations"


# --- DAG-level scalars ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("timeout", "ok"), [(0, False), (1, True), (604800, True), (604801, False)]
)
def test_timeout_bounds(timeout: int, ok: bool) -> None:
    body = dag(timeout_seconds=timeout)
    if ok:
        decode_dag_spec(json.dumps(body).encode())
        return
    error = single_error(body)
    assert error.field == "timeout_seconds"
    assert error.message == f"must be between 1 and 604800 seconds, got {timeout}"


@pytest.mark.parametrize(("retries", "ok"), [(-1, False), (0, True), (10, True), (11, False)])
def test_retries_bounds(retries: int, ok: bool) -> None:
    body = dag(retries=retries)
    if ok:
        decode_dag_spec(json.dumps(body).encode())
        return
    error = single_error(body)
    assert error.field == "retries"
    assert error.message == f"must be between 0 and 10, got {retries}"


def test_custom_limits_for_timeout_and_retries() -> None:
    limits = SpecLimits(min_timeout_seconds=60, max_timeout_seconds=120, max_retries=1)
    errors = errors_of(dag(timeout_seconds=30, retries=2), limits)
    assert [(e.field, e.message) for e in errors] == [
        ("timeout_seconds", "must be between 60 and 120 seconds, got 30"),
        ("retries", "must be between 0 and 1, got 2"),
    ]


# --- reporting ------------------------------------------------------------------------


def test_multiple_errors_all_reported() -> None:
    body = dag(
        task("Prep", image=""),
        task("train", depends_on=["prep", "train"], resources={"gpu": -1, "memory": "lots"}),
        task("train", env={"1X": "v"}, labels={"team": "-bad"}),
        name="Bad_Name",
        retries=99,
    )
    fields = [e.field for e in errors_of(body)]
    assert sorted(fields) == sorted(
        [
            "name",
            "retries",
            "tasks[0].name",
            "tasks[0].image",
            "tasks[1].depends_on[0]",
            "tasks[1].depends_on[1]",
            "tasks[1].resources.memory",
            "tasks[1].resources.gpu",
            "tasks[2].name",
            'tasks[2].env["1X"]',
            'tasks[2].labels["team"]',
        ]
    )


def test_reported_errors_are_capped() -> None:
    body = dag(task("a", depends_on=[f"missing-{i}" for i in range(150)]))
    errors = errors_of(body)
    assert len(errors) == 101
    assert errors[-1] == FieldError(field="", message="50 more errors were not reported")


def test_spec_error_str_summarises() -> None:
    error = SpecError([FieldError(field="name", message="bad"), FieldError(field="", message="x")])
    assert str(error) == "invalid DAG spec: name: bad; <body>: x"


def test_validate_dag_spec_directly() -> None:
    spec = DagSpec(
        name="p",
        tasks=[TaskSpec(name="a", image="i"), TaskSpec(name="b", image="i", depends_on=["a"])],
    )
    validate_dag_spec(spec)
    broken = copy.deepcopy(spec)
    broken.tasks[0].depends_on.append("b")
    with pytest.raises(SpecError) as info:
        validate_dag_spec(broken)
    assert [e.field for e in info.value.errors] == ["tasks"]
    assert "a -> b -> a" in info.value.errors[0].message
