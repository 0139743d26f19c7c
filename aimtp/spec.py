"""Pipeline (DAG) specification: the msgspec model, decoding and semantic validation.

``decode_dag_spec`` turns an HTTP body into a validated ``DagSpec`` or raises ``SpecError``
carrying one ``FieldError`` per problem, each with a path such as ``tasks[2].depends_on[0]``.
"""

from __future__ import annotations

import graphlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from aimtp import k8s

__all__ = [
    "DagSpec",
    "FieldError",
    "Resources",
    "SpecError",
    "SpecLimits",
    "TaskSpec",
    "decode_dag_spec",
    "task_order",
    "validate_dag_spec",
]


class Resources(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Compute resources requested by one task (Kubernetes quantity strings)."""

    cpu: str | None = None
    memory: str | None = None
    gpu: int = 0


class TaskSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One container run in the pipeline."""

    name: str
    image: str
    command: list[str] = msgspec.field(default_factory=list)
    args: list[str] = msgspec.field(default_factory=list)
    env: dict[str, str] = msgspec.field(default_factory=dict)
    depends_on: list[str] = msgspec.field(default_factory=list)
    resources: Resources = msgspec.field(default_factory=Resources)
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    annotations: dict[str, str] = msgspec.field(default_factory=dict)


class DagSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A training pipeline: tasks plus the dependencies between them."""

    name: str
    tasks: list[TaskSpec]
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    annotations: dict[str, str] = msgspec.field(default_factory=dict)
    timeout_seconds: int = 86400
    retries: int = 0


class FieldError(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One problem in a submitted spec; ``field`` is a path, ``""`` for the whole body."""

    field: str
    message: str


class SpecError(Exception):
    """Raised when a spec cannot be decoded or breaks semantic rules."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        summary = "; ".join(f"{e.field or '<body>'}: {e.message}" for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        super().__init__(f"invalid DAG spec: {summary}{more}")


class MalformedBody(SpecError):
    """The body is not JSON at all (as opposed to JSON that is not a valid DAG)."""


@dataclass(frozen=True)
class SpecLimits:
    """Deployment-tunable bounds applied by ``validate_dag_spec``."""

    max_tasks: int = 500
    min_timeout_seconds: int = 1
    max_timeout_seconds: int = 7 * 86400
    max_retries: int = 10


MAX_GPUS: Final = 64
MAX_IMAGE_CHARS: Final = 1024
# Bounds on free-form strings and collections so hostile input cannot bloat storage.
MAX_STRING_BYTES: Final = 64 * 1024
MAX_ITEMS: Final = 1024
MAX_ANNOTATIONS_BYTES: Final = 256 * 1024
# A body with thousands of bad entries should not yield a response as large as itself.
MAX_REPORTED_ERRORS: Final = 100

# C identifiers: environment variable names, and field names safe to join with ".".
_IDENTIFIER_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WHITESPACE_RE: Final = re.compile(r"\s")
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")
_KEY_SHOW_MAX: Final = 64


def _utf8_len(value: str) -> int:
    # surrogatepass: a spec built in Python (not decoded) may hold lone surrogates.
    return len(value.encode("utf-8", "surrogatepass"))


def _key_path(base: str, key: str) -> str:
    """Path of a map entry; keys are JSON-quoted since they may contain '.' or '/'."""
    shown = key if len(key) <= _KEY_SHOW_MAX else key[:_KEY_SHOW_MAX] + "..."
    return f"{base}[{json.dumps(shown)}]"


class _Collector:
    """Accumulates field errors, capped at ``MAX_REPORTED_ERRORS``."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []
        self.dropped = 0

    def add(self, field: str, message: str) -> None:
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(FieldError(field=field, message=message))
        else:
            self.dropped += 1

    def raise_if_any(self) -> None:
        if not self.errors:
            return
        errors = list(self.errors)
        if self.dropped:
            errors.append(
                FieldError(field="", message=f"{self.dropped} more errors were not reported")
            )
        raise SpecError(errors)


# ---------------------------------------------------------------------------
# Semantic validation
# ---------------------------------------------------------------------------


def validate_dag_spec(spec: DagSpec, limits: SpecLimits = SpecLimits()) -> None:
    """Check every semantic rule; raise ``SpecError`` listing all violations found."""
    out = _Collector()
    _check_name(out, "name", spec.name)
    _check_labels(out, "labels", spec.labels)
    _check_annotations(out, "annotations", spec.annotations)
    if not limits.min_timeout_seconds <= spec.timeout_seconds <= limits.max_timeout_seconds:
        out.add(
            "timeout_seconds",
            f"must be between {limits.min_timeout_seconds} and "
            f"{limits.max_timeout_seconds} seconds, got {spec.timeout_seconds}",
        )
    if not 0 <= spec.retries <= limits.max_retries:
        out.add("retries", f"must be between 0 and {limits.max_retries}, got {spec.retries}")

    count = len(spec.tasks)
    if not 1 <= count <= limits.max_tasks:
        out.add("tasks", f"must contain between 1 and {limits.max_tasks} tasks, got {count}")
    if count > limits.max_tasks:
        # Validating an oversized body task by task is wasted work for a rejected request.
        out.raise_if_any()
        return

    first_index: dict[str, int] = {}
    for index, task in enumerate(spec.tasks):
        path = f"tasks[{index}]"
        if task.name in first_index:
            out.add(
                f"{path}.name",
                f"duplicate task name {k8s.show(task.name)} "
                f"(first used by tasks[{first_index[task.name]}])",
            )
        else:
            first_index[task.name] = index
        _check_task(out, path, task)

    edges = _check_dependencies(out, spec.tasks, first_index)
    _check_acyclic(out, edges, first_index)
    out.raise_if_any()


def _check_name(out: _Collector, field: str, name: str) -> None:
    problem = k8s.check_dns1123_label(name)
    if problem is not None:
        out.add(field, problem)


def _check_task(out: _Collector, path: str, task: TaskSpec) -> None:
    _check_name(out, f"{path}.name", task.name)
    _check_image(out, f"{path}.image", task.image)
    _check_strings(out, f"{path}.command", task.command)
    _check_strings(out, f"{path}.args", task.args)
    _check_env(out, f"{path}.env", task.env)
    _check_resources(out, f"{path}.resources", task.resources)
    _check_labels(out, f"{path}.labels", task.labels)
    _check_annotations(out, f"{path}.annotations", task.annotations)


def _check_image(out: _Collector, field: str, image: str) -> None:
    if not image:
        out.add(
            field,
            "must not be empty; give a container image such as "
            "'registry.example.com/team/trainer:1.0'",
        )
    elif len(image) > MAX_IMAGE_CHARS:
        out.add(field, f"must be at most {MAX_IMAGE_CHARS} characters, got {len(image)}")
    elif _WHITESPACE_RE.search(image):
        out.add(field, f"must not contain whitespace, got {k8s.show(image)}")
    elif _CONTROL_RE.search(image):
        # NUL and other control characters are no part of an image reference.
        out.add(field, f"must not contain control characters, got {k8s.show(image)}")


def _check_text(out: _Collector, field: str, value: str) -> None:
    """Free-form text that ends up in a process's argv or environment."""
    size = _utf8_len(value)
    if size > MAX_STRING_BYTES:
        out.add(field, f"must be at most {MAX_STRING_BYTES} bytes (64 KiB), got {size}")
    elif "\x00" in value:
        # execve() cannot pass NUL bytes; Kubernetes would fail the pod at runtime.
        out.add(field, "must not contain NUL characters")


def _check_strings(out: _Collector, field: str, values: list[str]) -> None:
    if len(values) > MAX_ITEMS:
        out.add(field, f"must have at most {MAX_ITEMS} entries, got {len(values)}")
        return
    for index, value in enumerate(values):
        _check_text(out, f"{field}[{index}]", value)


def _check_env(out: _Collector, field: str, env: Mapping[str, str]) -> None:
    if len(env) > MAX_ITEMS:
        out.add(field, f"must have at most {MAX_ITEMS} variables, got {len(env)}")
        return
    for key, value in env.items():
        entry = _key_path(field, key)
        if len(key) > MAX_STRING_BYTES or not _IDENTIFIER_RE.fullmatch(key):
            out.add(
                entry,
                f"environment variable name {k8s.show(key)} is invalid; must start with a "
                "letter or '_' followed by letters, digits or '_'",
            )
        _check_text(out, entry, value)


def _check_resources(out: _Collector, path: str, resources: Resources) -> None:
    examples = {"cpu": "'500m', '2' or '1.5'", "memory": "'512Mi' or '8Gi'"}
    for kind, value in (("cpu", resources.cpu), ("memory", resources.memory)):
        if value is None:
            continue
        quantity = k8s.parse_quantity(value)
        if quantity is None:
            out.add(
                f"{path}.{kind}",
                f"must be a Kubernetes quantity such as {examples[kind]}, got {k8s.show(value)}",
            )
        elif quantity <= 0:
            out.add(f"{path}.{kind}", f"must be greater than 0, got {k8s.show(value)}")
    if not 0 <= resources.gpu <= MAX_GPUS:
        out.add(f"{path}.gpu", f"must be between 0 and {MAX_GPUS}, got {resources.gpu}")


def _check_labels(out: _Collector, field: str, labels: Mapping[str, str]) -> None:
    if len(labels) > MAX_ITEMS:
        out.add(field, f"must have at most {MAX_ITEMS} labels, got {len(labels)}")
        return
    for key, value in labels.items():
        problem = k8s.check_label_key(key) or k8s.check_label_value(value)
        if problem is not None:
            out.add(_key_path(field, key), problem)


def _check_annotations(out: _Collector, field: str, annotations: Mapping[str, str]) -> None:
    total = 0
    for key, value in annotations.items():
        problem = k8s.check_annotation_key(key)
        if problem is not None:
            out.add(_key_path(field, key), problem)
        total += _utf8_len(key) + _utf8_len(value)
    if total > MAX_ANNOTATIONS_BYTES:
        out.add(
            field,
            f"total size of annotation keys and values must be at most "
            f"{MAX_ANNOTATIONS_BYTES} bytes (256 KiB), got {total}",
        )


def _check_dependencies(
    out: _Collector, tasks: list[TaskSpec], first_index: Mapping[str, int]
) -> dict[str, list[str]]:
    """Report bad ``depends_on`` entries; return the graph of the valid edges only."""
    edges: dict[str, list[str]] = {}
    for index, task in enumerate(tasks):
        seen: dict[str, int] = {}
        valid: list[str] = []
        for dep_index, dep in enumerate(task.depends_on):
            field = f"tasks[{index}].depends_on[{dep_index}]"
            if dep in seen:
                out.add(
                    field,
                    f"duplicate dependency {k8s.show(dep)} "
                    f"(already listed at tasks[{index}].depends_on[{seen[dep]}])",
                )
                continue
            seen[dep] = dep_index
            if dep == task.name:
                out.add(field, f"task {k8s.show(dep)} depends on itself")
            elif dep not in first_index:
                out.add(field, f"unknown task {k8s.show(dep)}")
            else:
                valid.append(dep)
        # A duplicate task name has already been reported; merging its edges is harmless.
        edges.setdefault(task.name, []).extend(valid)
    return edges


def _check_acyclic(
    out: _Collector, edges: Mapping[str, Iterable[str]], first_index: Mapping[str, int]
) -> None:
    try:
        graphlib.TopologicalSorter(edges).prepare()
    except graphlib.CycleError as exc:
        # graphlib lists the cycle in execution order (b before a when a depends on b);
        # reverse it so each arrow reads "depends on", and start at the earliest declared
        # task so the message does not depend on graphlib's traversal.
        cycle: list[str] = list(reversed(exc.args[1][:-1]))
        start = min(range(len(cycle)), key=lambda i: first_index.get(cycle[i], 0))
        cycle = cycle[start:] + cycle[:start]
        # Invalid (possibly huge) names are already reported; keep this message short.
        shown = [n if len(n) <= k8s.DNS1123_LABEL_MAX else k8s.show(n) for n in cycle]
        rendered = " -> ".join([*shown, shown[0]])
        out.add("tasks", f"dependency cycle: {rendered}")


def task_order(spec: DagSpec) -> list[str]:
    """Return task names in an order where every task comes after its dependencies."""
    graph = {task.name: task.depends_on for task in spec.tasks}
    return list(graphlib.TopologicalSorter(graph).static_order())


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------

_DECODER: Final = msgspec.json.Decoder(DagSpec)
_SCHEMA: Final = msgspec.inspect.type_info(DagSpec)
# msgspec appends " - at `$.path`" to validation messages; paths never contain backticks.
_AT_PATH_RE: Final = re.compile(r" - at `(\$[^`]*)`\Z")
_PATH_SEGMENT_RE: Final = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[([0-9]+)\]|\[\.\.\.\]")
_UNKNOWN_FIELD: Final = "Object contains unknown field `"
_MISSING_FIELD_RE: Final = re.compile(r"Object missing required field `([^`]*)`")

_Segment = str | int | None  # struct field, list index, or any dict value


def decode_dag_spec(body: bytes, limits: SpecLimits = SpecLimits()) -> DagSpec:
    """Decode a JSON request body into a validated ``DagSpec``; raise ``SpecError`` if bad."""
    try:
        spec = _DECODER.decode(body)
    except msgspec.ValidationError as exc:
        raise SpecError([_validation_error(str(exc), body)]) from None
    except msgspec.DecodeError as exc:
        raise MalformedBody(
            [FieldError(field="", message=f"request body is not valid JSON: {exc}")]
        ) from None
    validate_dag_spec(spec, limits)
    return spec


def _validation_error(message: str, body: bytes) -> FieldError:
    """Translate a msgspec ValidationError message into a FieldError with a plain path."""
    text, segments = message, []
    match = _AT_PATH_RE.search(message)
    if match is not None and (parsed := _parse_path(match[1])) is not None:
        text, segments = message[: match.start()], parsed

    if message.startswith(_UNKNOWN_FIELD) and message.endswith("`"):
        name = text[len(_UNKNOWN_FIELD) : -1]
        # A hostile key such as "x` - at `$.tasks" can fake the path suffix; trust the
        # suffix only if the object it points at really holds the reported key.
        if segments and not _has_key(body, segments, name):
            name, segments = message[len(_UNKNOWN_FIELD) : -1], []
        return FieldError(
            field=_join_name(_render_path(segments), name),
            message=f"unknown field; allowed fields are {_allowed_fields(segments)}",
        )

    missing = _MISSING_FIELD_RE.fullmatch(text)
    if missing is not None:
        return FieldError(
            field=_join_name(_render_path(segments), missing[1]),
            message="required field is missing",
        )

    field = _render_path(segments)
    if not segments and text.startswith("Expected `object`"):
        return FieldError(field="", message=f"request body must be a JSON object: {text}")
    if segments and segments[-1] is None:
        text += " (in a map value)"
    return FieldError(field=field, message=text)


def _parse_path(path: str) -> list[_Segment] | None:
    """Split msgspec's ``$.tasks[0].env[...]`` into segments; None if it is not a path."""
    segments: list[_Segment] = []
    pos = 1  # skip "$"
    while pos < len(path):
        match = _PATH_SEGMENT_RE.match(path, pos)
        if match is None:
            return None
        if match[1] is not None:
            segments.append(match[1])
        elif match[2] is not None:
            segments.append(int(match[2]))
        else:
            segments.append(None)
        pos = match.end()
    return segments


def _render_path(segments: list[_Segment]) -> str:
    parts: list[str] = []
    for segment in segments:
        if isinstance(segment, int):
            parts.append(f"[{segment}]")
        elif isinstance(segment, str):
            parts.append(f".{segment}" if parts else segment)
        # Dict values: msgspec does not say which key, so the path stops at the map.
    return "".join(parts)


def _join_name(path: str, name: str) -> str:
    if _IDENTIFIER_RE.fullmatch(name):
        return f"{path}.{name}" if path else name
    return _key_path(path, name)


def _has_key(body: bytes, segments: list[_Segment], name: str) -> bool:
    """Whether the JSON object at ``segments`` in ``body`` has key ``name``."""
    node: Any = msgspec.json.decode(body)
    for segment in segments:
        if isinstance(segment, str):
            present = isinstance(node, dict) and segment in node
        else:
            present = isinstance(node, list) and segment is not None and segment < len(node)
        if not present:
            return False
        node = node[segment]
    return isinstance(node, dict) and name in node


def _allowed_fields(segments: list[_Segment]) -> str:
    """Names of the fields of the struct found at ``segments`` in the schema."""
    node: msgspec.inspect.Type = _SCHEMA
    for segment in segments:
        if isinstance(node, msgspec.inspect.StructType) and isinstance(segment, str):
            found = next((f.type for f in node.fields if f.encode_name == segment), None)
            if found is None:
                return "those of the schema"
            node = found
        elif isinstance(node, msgspec.inspect.ListType) and isinstance(segment, int):
            node = node.item_type
        else:
            return "those of the schema"
    if not isinstance(node, msgspec.inspect.StructType):
        return "those of the schema"
    return ", ".join(f.encode_name for f in node.fields)
