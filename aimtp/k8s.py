"""Pure validators for Kubernetes-style names, labels, annotations and quantities.

Each ``check_*`` function returns ``None`` when the value is valid, otherwise a message
that says what is wrong and what is allowed. The rules follow Kubernetes' apimachinery
validation so that anything accepted here is also accepted by the API server.
"""

from __future__ import annotations

import decimal
import re
from decimal import Decimal
from typing import Final

__all__ = [
    "check_annotation_key",
    "check_dns1123_label",
    "check_dns1123_subdomain",
    "check_label_key",
    "check_label_value",
    "parse_quantity",
    "show",
]

DNS1123_LABEL_MAX: Final = 63
DNS1123_SUBDOMAIN_MAX: Final = 253
QUALIFIED_NAME_MAX: Final = 63
LABEL_VALUE_MAX: Final = 63

# Patterns are matched with fullmatch() so a trailing newline can never slip through
# (unlike '$'); explicit ASCII classes avoid Unicode digits/letters matching.
_DNS1123_LABEL_RE: Final = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN_RE: Final = re.compile(
    r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*"
)
_QUALIFIED_NAME_RE: Final = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?")

DNS1123_LABEL_RULE: Final = (
    "must be a DNS-1123 label: lowercase letters, digits and '-', "
    "starting and ending with a letter or digit, at most 63 characters"
)
_SUBDOMAIN_RULE: Final = (
    "a DNS-1123 subdomain: dot-separated parts of lowercase letters, digits and '-', "
    "each starting and ending with a letter or digit, at most 253 characters"
)
_NAME_PART_RULE: Final = (
    "letters, digits, '-', '_' and '.', starting and ending with a letter or digit, "
    "at most 63 characters"
)
_QUALIFIED_RULE: Final = (
    f"an optional prefix ({_SUBDOMAIN_RULE}) and '/', followed by a name ({_NAME_PART_RULE})"
)

_SHOW_MAX: Final = 80


def show(value: str) -> str:
    """Quote a user-supplied string for a message, truncated so hostile input stays small."""
    if len(value) > _SHOW_MAX:
        return repr(value[:_SHOW_MAX]) + f"... ({len(value)} characters)"
    return repr(value)


def check_dns1123_label(value: str) -> str | None:
    """Validate a DNS-1123 label (task and DAG names, Kubernetes object names)."""
    if len(value) > DNS1123_LABEL_MAX:
        return f"{DNS1123_LABEL_RULE}, got {len(value)} characters"
    if not _DNS1123_LABEL_RE.fullmatch(value):
        return f"{DNS1123_LABEL_RULE}, got {show(value)}"
    return None


def check_dns1123_subdomain(value: str) -> str | None:
    """Validate a DNS-1123 subdomain (label/annotation key prefixes)."""
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        return f"must be {_SUBDOMAIN_RULE}, got {len(value)} characters"
    if not _DNS1123_SUBDOMAIN_RE.fullmatch(value):
        return f"must be {_SUBDOMAIN_RULE}, got {show(value)}"
    return None


def _check_qualified_name(kind: str, key: str) -> str | None:
    """Shared rule for label and annotation keys: ``[prefix/]name``."""
    prefix, slash, name = key.rpartition("/")
    if slash and not prefix:
        return f"{kind} {show(key)} has an empty prefix before '/'; must be {_QUALIFIED_RULE}"
    if "/" in prefix:
        return f"{kind} {show(key)} has more than one '/'; must be {_QUALIFIED_RULE}"
    if slash:
        problem = check_dns1123_subdomain(prefix)
        if problem is not None:
            return f"{kind} prefix {problem}"
    if not name:
        return f"{kind} {show(key)} has an empty name; must be {_QUALIFIED_RULE}"
    if len(name) > QUALIFIED_NAME_MAX or not _QUALIFIED_NAME_RE.fullmatch(name):
        return f"{kind} name part {show(name)} is invalid; must be {_NAME_PART_RULE}"
    return None


def check_label_key(key: str) -> str | None:
    """Validate a label key (a Kubernetes qualified name)."""
    return _check_qualified_name("label key", key)


def check_annotation_key(key: str) -> str | None:
    """Validate an annotation key (same rule as label keys; values are free-form)."""
    return _check_qualified_name("annotation key", key)


def check_label_value(value: str) -> str | None:
    """Validate a label value: empty, or a short name of letters, digits, '-', '_', '.'."""
    if value == "":
        return None
    if len(value) > LABEL_VALUE_MAX or not _QUALIFIED_NAME_RE.fullmatch(value):
        return f"label value {show(value)} is invalid; must be empty or {_NAME_PART_RULE}"
    return None


# Quantity grammar: unsigned decimal number then one optional suffix. Kubernetes allows
# a sign, but negative sizes make no sense for resource requests, so we refuse them.
_QUANTITY_RE: Final = re.compile(
    r"(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?:(?P<binary>[KMGTPE]i)|(?P<exp>[eE][+-]?[0-9]+)|(?P<si>[numkMGTPE]))?"
)
_BINARY_POWERS: Final = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_SI_EXPONENTS: Final = {
    "n": -9,
    "u": -6,
    "m": -3,
    "k": 3,
    "M": 6,
    "G": 9,
    "T": 12,
    "P": 15,
    "E": 18,
}
# Kubernetes caps quantities at 2^63-1; rejecting larger ones keeps callers from
# turning absurd exponents into huge integers.
_QUANTITY_MAX: Final = Decimal(2**63 - 1)
_QUANTITY_TEXT_MAX: Final = 64
# Wide enough to represent every accepted quantity exactly (64 digits, small exponents).
_QUANTITY_CONTEXT: Final = decimal.Context(prec=160, Emax=10_000, Emin=-10_000)


def parse_quantity(value: str) -> Decimal | None:
    """Parse a Kubernetes resource quantity (``500m``, ``8Gi``, ``1e3``) to its exact value.

    Returns ``None`` when ``value`` is not a valid non-negative quantity or exceeds 2^63-1.
    """
    if len(value) > _QUANTITY_TEXT_MAX:
        return None
    match = _QUANTITY_RE.fullmatch(value)
    if match is None:
        return None
    number = Decimal(match["number"])
    try:
        with decimal.localcontext(_QUANTITY_CONTEXT):
            if match["binary"]:
                result = number * (1 << _BINARY_POWERS[match["binary"]])
            elif match["exp"]:
                exponent = int(match["exp"][1:])
                result = number.scaleb(exponent) if number else number
            elif match["si"]:
                result = number.scaleb(_SI_EXPONENTS[match["si"]])
            else:
                result = number
    except ArithmeticError:
        # Exponents beyond the context range: far outside anything Kubernetes accepts.
        return None
    if result > _QUANTITY_MAX:
        return None
    return result
