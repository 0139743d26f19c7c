"""What the deployment tests check manifests against: the repository, the settings
declarations and the ``aimtp`` command line."""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from aimtp.cli import build_parser
from aimtp.settings import all_settings

ROOT = Path(__file__).parents[2]

SETTINGS: frozenset[str] = frozenset(
    variable for kind in all_settings() for variable, _, _ in kind.describe()
)

#: Settings that hold credentials: they come from a Secret, never from plain config.
SECRET_SETTINGS = frozenset(
    {
        "AIMTP_DATABASE_URL",
        "AIMTP_API_TOKENS",
        "AIMTP_CONTROLLER_TOKEN",
        "AIMTP_CONTROLLER_CALLBACK_TOKEN",
    }
)


def settings_errors(env: Mapping[str, str]) -> list[str]:
    """Why ``env`` is not a valid AIMTP configuration: unknown names, unparsable values."""
    errors = [
        f"{name} is not an AIMTP setting"
        for name in sorted(env)
        if name.startswith("AIMTP_") and name not in SETTINGS
    ]
    for kind in all_settings():
        try:
            kind.from_env(env)
        except ValueError as exc:
            errors.append(str(exc))
    return errors


def aimtp_command_error(argv: Sequence[str]) -> str | None:
    """None when ``aimtp ARGV`` is a valid command line, else argparse's complaint."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            build_parser().parse_args(list(argv))
    except SystemExit:
        return stderr.getvalue().strip() or f"aimtp {' '.join(argv)} exited"
    return None


def dockerfile_user() -> str:
    """The USER the image runs as (the last USER instruction of the Dockerfile)."""
    users = re.findall(r"^USER\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert users, "the Dockerfile sets no USER"
    return str(users[-1])
