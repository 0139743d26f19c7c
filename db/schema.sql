-- AIMTP schema: the single source of truth. `aimtp db init` applies it; every
-- statement is idempotent. Runs on MySQL 8 and MariaDB 10.11 alike.
-- Times are UTC, microsecond precision. Ids are UUIDv7 strings (time-ordered).

-- One row per submitted DAG. Every state change is a conditional UPDATE
-- (WHERE id = ? AND state = ? AND version = ?) written in the same transaction as
-- its outbox event and its dag_transitions row.
CREATE TABLE IF NOT EXISTS dags (
  id              CHAR(36) CHARACTER SET ascii NOT NULL,
  tenant          VARCHAR(63) CHARACTER SET ascii NOT NULL,
  name            VARCHAR(63) CHARACTER SET ascii NOT NULL,
  spec            JSON NOT NULL,
  labels          JSON NOT NULL,
  state           VARCHAR(16) CHARACTER SET ascii NOT NULL,
  version         INT UNSIGNED NOT NULL DEFAULT 1,
  attempt         INT UNSIGNED NOT NULL DEFAULT 1,
  -- When the current state must have moved on; the watcher scans (state, deadline_at).
  -- NULL in terminal states.
  deadline_at     DATETIME(6) NULL,
  -- The DAG's own timeout while RUNNING (started + timeout_seconds).
  timeout_at      DATETIME(6) NULL,
  -- dag.submitted re-emitted by the watcher without progress, for this attempt.
  reemits         INT UNSIGNED NOT NULL DEFAULT 0,
  idempotency_key VARCHAR(255) NULL,
  request_hash    CHAR(64) CHARACTER SET ascii NULL,
  controller_ref  VARCHAR(255) NULL,
  error           TEXT NULL,
  task_phases     JSON NULL,
  status_at       DATETIME(6) NULL,
  created_at      DATETIME(6) NOT NULL,
  updated_at      DATETIME(6) NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uq_dags_tenant_idempotency_key (tenant, idempotency_key),
  KEY ix_dags_state_deadline (state, deadline_at),
  KEY ix_dags_state_timeout (state, timeout_at),
  KEY ix_dags_tenant_created (tenant, created_at, id),
  KEY ix_dags_tenant_state_created (tenant, state, created_at, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Labels of each DAG, one row per label, written with the DAG: the index that serves
-- `GET /v1/dags?label=key=value` newest first without scanning the tenant's DAGs.
CREATE TABLE IF NOT EXISTS dag_labels (
  tenant      VARCHAR(63) CHARACTER SET ascii NOT NULL,
  label_key   VARCHAR(317) CHARACTER SET ascii NOT NULL,
  label_value VARCHAR(63) CHARACTER SET ascii NOT NULL,
  created_at  DATETIME(6) NOT NULL,
  dag_id      CHAR(36) CHARACTER SET ascii NOT NULL,
  PRIMARY KEY (tenant, label_key, label_value, created_at, dag_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The transactional outbox: written with the state change, published by aimtp-relay.
-- The relay selects by status, never by "id above the last one sent", so a row whose
-- transaction commits late is still published.
CREATE TABLE IF NOT EXISTS outbox (
  id           BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  event_id     CHAR(36) CHARACTER SET ascii NOT NULL,
  dag_id       CHAR(36) CHARACTER SET ascii NOT NULL,
  event_type   VARCHAR(32) CHARACTER SET ascii NOT NULL,
  source       VARCHAR(64) CHARACTER SET ascii NOT NULL,
  -- The Kafka record value, msgspec JSON encoded once when the event is written.
  payload      MEDIUMBLOB NOT NULL,
  traceparent  VARCHAR(55) CHARACTER SET ascii NULL,
  status       ENUM('pending', 'published', 'parked', 'dropped') NOT NULL DEFAULT 'pending',
  created_at   DATETIME(6) NOT NULL,
  published_at DATETIME(6) NULL,
  -- Why the broker refused the row (parked), or who dropped it.
  park_reason  VARCHAR(1024) NULL,
  PRIMARY KEY (id),
  KEY ix_outbox_status_id (status, id),
  KEY ix_outbox_status_published (status, published_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- One row that every relay batch locks first, in its own transaction. A relay that lost
-- its leadership while a batch was open keeps its successor waiting until that batch
-- has committed or rolled back, so two relays never publish at the same time.
CREATE TABLE IF NOT EXISTS outbox_fence (
  id TINYINT UNSIGNED NOT NULL,
  PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Every state transition of every DAG: the history users read.
CREATE TABLE IF NOT EXISTS dag_transitions (
  id         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  dag_id     CHAR(36) CHARACTER SET ascii NOT NULL,
  from_state VARCHAR(16) CHARACTER SET ascii NULL,
  to_state   VARCHAR(16) CHARACTER SET ascii NOT NULL,
  attempt    INT UNSIGNED NOT NULL,
  actor      VARCHAR(16) CHARACTER SET ascii NOT NULL,
  reason     TEXT NULL,
  created_at DATETIME(6) NOT NULL,
  PRIMARY KEY (id),
  KEY ix_dag_transitions_dag (dag_id, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Events a consumer has acted on, written in the same transaction as the action,
-- so a redelivered event is recognised and changes nothing.
CREATE TABLE IF NOT EXISTS processed_events (
  consumer     VARCHAR(64) CHARACTER SET ascii NOT NULL,
  event_id     CHAR(36) CHARACTER SET ascii NOT NULL,
  processed_at DATETIME(6) NOT NULL,
  PRIMARY KEY (consumer, event_id),
  KEY ix_processed_events_at (processed_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
