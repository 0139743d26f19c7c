from __future__ import annotations

import pytest

from aimtp.settings import RelaySettings, ServerSettings, all_settings
from aimtp.tracing import child_traceparent, new_traceparent, trace_id_of, valid_traceparent
from app.auth import TokenRegistry


def test_settings_read_typed_values_from_the_environment() -> None:
    relay = RelaySettings.from_env(
        {"AIMTP_RELAY_BATCH_SIZE": "50", "AIMTP_RELAY_RETENTION_HOURS": "1.5"}
    )
    assert (relay.relay_batch_size, relay.relay_retention_hours) == (50, 1.5)
    assert relay.relay_lock_name == "aimtp.relay"  # default kept


def test_a_malformed_setting_names_the_variable() -> None:
    with pytest.raises(ValueError, match="AIMTP_HTTP_PORT: expected int"):
        ServerSettings.from_env({"AIMTP_HTTP_PORT": "eighty"})


def test_every_setting_is_documented() -> None:
    for kind in all_settings():
        for variable, _, help_text in kind.describe():
            assert variable.startswith("AIMTP_")
            assert help_text.endswith("."), variable


def test_token_registry_maps_tokens_to_tenants_and_knows_the_controller() -> None:
    registry = TokenRegistry.parse("a-secret:team-a, b:secret:team-b", "ctl")
    assert registry.tenant_for("a-secret").name == "team-a"  # type: ignore[union-attr]
    assert registry.tenant_for("b:secret").name == "team-b"  # type: ignore[union-attr]
    assert registry.tenant_for("ctl") is None
    assert registry.is_controller("ctl")
    assert not registry.is_controller("a-secret")


def test_token_registry_refuses_malformed_pairs() -> None:
    with pytest.raises(ValueError, match="token:tenant"):
        TokenRegistry.parse("no-tenant-here", "")


def test_traceparent_validation_and_continuation() -> None:
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert valid_traceparent(parent) == parent
    assert valid_traceparent("00-" + "0" * 32 + "-00f067aa0ba902b7-01") is None
    assert valid_traceparent("garbage") is None
    child = child_traceparent(parent)
    assert trace_id_of(child) == trace_id_of(parent)
    assert child != parent
    assert valid_traceparent(new_traceparent()) is not None
    assert valid_traceparent(child_traceparent(None)) is not None
