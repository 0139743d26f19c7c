from __future__ import annotations

import re
from pathlib import Path

from aimtp.cli import settings_markdown

README = (Path(__file__).parents[2] / "README.md").read_text()


def test_configuration_table_matches_the_settings() -> None:
    block = re.search(r"<!-- settings:start -->\n(.*?)<!-- settings:end -->", README, re.S)
    assert block is not None
    assert block[1].strip() == settings_markdown(), "run `make docs` to regenerate the table"


def test_quickstart_has_the_two_commands() -> None:
    assert "make run" in README
    assert "make test" in README
