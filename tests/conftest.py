"""Test settings shared by every suite.

Integration and end-to-end tests run against the real MariaDB and Kafka that
``make test`` starts (infra/local). A missing service fails the run; it is never
skipped. Settings come from the environment, so they are set here before any
AIMTP module reads them.
"""

from __future__ import annotations

import os

TEST_DATABASE = os.environ.setdefault("AIMTP_TEST_DATABASE", "aimtp_test_0")
TENANT_TOKENS = {"tenant-a-token": "tenant-a", "tenant-b-token": "tenant-b"}
CONTROLLER_CALLBACK_TOKEN = "test-controller-callback-token"

os.environ.update(
    {
        "AIMTP_DATABASE_URL": f"mysql+asyncmy://aimtp:aimtp@127.0.0.1:3306/{TEST_DATABASE}",
        "AIMTP_KAFKA_BOOTSTRAP": os.environ.get("AIMTP_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        "AIMTP_API_TOKENS": ",".join(f"{t}:{n}" for t, n in TENANT_TOKENS.items()),
        "AIMTP_CONTROLLER_CALLBACK_TOKEN": CONTROLLER_CALLBACK_TOKEN,
        "AIMTP_LOG_LEVEL": "WARNING",
        # No fixed gRPC port on a shared machine: a test that serves gRPC picks a free one.
        "AIMTP_GRPC_PORT": "0",
    }
)

pytest_plugins = ["tests.db_fixtures"]
