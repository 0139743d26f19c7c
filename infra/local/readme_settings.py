"""Rewrite the configuration table in README.md from the settings declarations."""

from __future__ import annotations

import re
from pathlib import Path

from aimtp.cli import settings_markdown

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"(<!-- settings:start -->\n).*?(<!-- settings:end -->)", re.S)


def main() -> None:
    text = README.read_text()
    README.write_text(BLOCK.sub(lambda m: m[1] + settings_markdown() + "\n" + m[2], text))


if __name__ == "__main__":
    main()
