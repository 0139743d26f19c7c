-- Hand-written SQL of AIMTP's hot paths, one named block each, loaded once by
-- aimtp/db/queries.py. Parameters are :named. Times are UTC.

-- ---------------------------------------------------------------- dags

-- name: insert_dag
INSERT INTO dags (id, tenant, name, spec, labels, state, version, attempt, deadline_at,
                  timeout_at, reemits, idempotency_key, request_hash, controller_ref, error,
                  task_phases, status_at, created_at, updated_at)
VALUES (:id, :tenant, :name, :spec, :labels, :state, :version, :attempt, :deadline_at,
        :timeout_at, :reemits, :idempotency_key, :request_hash, :controller_ref, :error,
        :task_phases, :status_at, :created_at, :updated_at);

-- name: get_dag
SELECT * FROM dags WHERE id = :id;

-- name: get_tenant_dag
SELECT * FROM dags WHERE id = :id AND tenant = :tenant;

-- name: get_dag_by_idempotency_key
SELECT * FROM dags WHERE tenant = :tenant AND idempotency_key = :idempotency_key;

-- The one way a DAG row changes: conditional on the state and version the caller
-- read, so of two racing writers exactly one wins and the other sees rowcount 0.
-- name: update_dag
UPDATE dags
SET state = :state, version = :version, attempt = :attempt, deadline_at = :deadline_at,
    timeout_at = :timeout_at, reemits = :reemits, controller_ref = :controller_ref,
    error = :error, task_phases = :task_phases, status_at = :status_at,
    updated_at = :updated_at
WHERE id = :id AND state = :expected_state AND version = :expected_version;

-- name: insert_transition
INSERT INTO dag_transitions (dag_id, from_state, to_state, attempt, actor, reason, created_at)
VALUES (:dag_id, :from_state, :to_state, :attempt, :actor, :reason, :created_at);

-- ---------------------------------------------------------------- outbox

-- name: insert_outbox
INSERT INTO outbox (event_id, dag_id, event_type, source, payload, traceparent, status,
                    created_at)
VALUES (:event_id, :dag_id, :event_type, :source, :payload, :traceparent, 'pending',
        :created_at);

-- An Idempotency-Key past its window is detached from its DAG so it can be reused.
-- name: release_idempotency_key
UPDATE dags SET idempotency_key = NULL, request_hash = NULL
WHERE id = :id AND tenant = :tenant;
