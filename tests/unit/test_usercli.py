from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from aimtp.apiclient import ApiError
from aimtp.usercli import load_spec, render_table

EXAMPLE = Path(__file__).parents[2] / "examples" / "dag.json"


def test_json_and_yaml_specs_load_to_the_same_json(tmp_path: Path) -> None:
    as_yaml = tmp_path / "dag.yaml"
    as_yaml.write_text(yaml.safe_dump(json.loads(EXAMPLE.read_text())))
    assert json.loads(load_spec(str(as_yaml))) == json.loads(load_spec(str(EXAMPLE)))


def test_yaml_without_extension_is_recognised(tmp_path: Path) -> None:
    spec = tmp_path / "dag.txt"
    spec.write_text("name: tiny\ntasks:\n  - name: a\n    image: busybox\n")
    assert json.loads(load_spec(str(spec))) == {
        "name": "tiny",
        "tasks": [{"name": "a", "image": "busybox"}],
    }


def test_missing_file_is_an_os_error() -> None:
    with pytest.raises(FileNotFoundError):
        load_spec("does/not/exist.json")


def test_tables_align_columns() -> None:
    assert render_table(["A", "LONGER"], [["xyz", 1], [None, "2"]]).splitlines() == [
        "A    LONGER",
        "xyz  1",
        "     2",
    ]


def test_api_errors_show_the_problem_detail_and_fields() -> None:
    error = ApiError(
        422,
        {
            "detail": "the DAG is invalid",
            "errors": [{"field": "tasks[0].image", "message": "required field is missing"}],
        },
    )
    assert str(error).splitlines() == [
        "the DAG is invalid (HTTP 422)",
        "  tasks[0].image: required field is missing",
    ]
