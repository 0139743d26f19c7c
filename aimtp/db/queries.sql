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

-- name: insert_dag_label
INSERT INTO dag_labels (tenant, label_key, label_value, created_at, dag_id)
VALUES (:tenant, :label_key, :label_value, :created_at, :dag_id);

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

-- name: dag_history
SELECT id, from_state, to_state, attempt, actor, reason, created_at
FROM dag_transitions WHERE dag_id = :dag_id ORDER BY id
LIMIT :limit;

-- A DAG's transitions after the last one a watcher saw, oldest first; served by
-- (dag_id, id). Ids grow with every insert, so "after id N" resumes a watch exactly.
-- name: dag_transitions_after
SELECT id, from_state, to_state, attempt, actor, reason, created_at
FROM dag_transitions WHERE dag_id = :dag_id AND id > :after ORDER BY id
LIMIT :limit;

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

-- ---------------------------------------------------------------- relay

-- The first statement of every relay batch: waits while another relay's batch is open
-- (see outbox_fence in schema.sql). An upsert, so the row needs no seeding and survives
-- a cleared table; a duplicate key takes the row's exclusive lock.
-- name: enter_outbox_fence
INSERT INTO outbox_fence (id) VALUES (1) ON DUPLICATE KEY UPDATE id = id;

-- Unpublished rows in id order. Selected by status, never by "id above the last one
-- sent", so a row whose transaction commits late is still found. SKIP LOCKED steps
-- over rows of transactions still in flight instead of waiting for them. Rows of a
-- DAG that has a parked row wait behind it, keeping that DAG's order.
-- name: claim_outbox_batch
SELECT o.id, o.event_id, o.dag_id, o.event_type, o.source, o.payload, o.traceparent,
       o.created_at
FROM outbox o
WHERE o.status = 'pending'
  AND NOT EXISTS (
    SELECT 1 FROM outbox p WHERE p.status = 'parked' AND p.dag_id = o.dag_id AND p.id < o.id
  )
ORDER BY o.id
LIMIT :limit
FOR UPDATE SKIP LOCKED;

-- name: mark_outbox_published
UPDATE outbox SET status = 'published', published_at = :published_at
WHERE id IN :ids AND status = 'pending';

-- name: park_outbox_row
UPDATE outbox SET status = 'parked', park_reason = :reason
WHERE id = :id AND status = 'pending';

-- name: outbox_pending_stats
SELECT COUNT(*) AS pending,
       (SELECT created_at FROM outbox WHERE status = 'pending' ORDER BY id LIMIT 1) AS oldest,
       (SELECT COUNT(*) FROM outbox WHERE status = 'parked') AS parked
FROM outbox WHERE status = 'pending';

-- name: purge_outbox
DELETE FROM outbox
WHERE status IN ('published', 'dropped') AND published_at < :cutoff
LIMIT :limit;

-- name: list_parked_outbox
SELECT id, event_id, dag_id, event_type, created_at, park_reason
FROM outbox WHERE status = 'parked' ORDER BY id;

-- An operator re-queues a parked row after fixing its cause.
-- name: release_parked_outbox
UPDATE outbox SET status = 'pending', park_reason = NULL
WHERE id = :id AND status = 'parked';

-- An operator discards a parked row; the row stays, marked and explained, until purged.
-- name: drop_parked_outbox
UPDATE outbox
SET status = 'dropped', published_at = :now,
    park_reason = LEFT(CONCAT('dropped by operator; was: ', COALESCE(park_reason, '')), 1024)
WHERE id = :id AND status = 'parked';

-- ---------------------------------------------------------------- processed events

-- Written in the transaction of the state change an event caused, so a redelivered
-- event is recognised. A duplicate key means another consumer handled it first.
-- name: insert_processed_event
INSERT INTO processed_events (consumer, event_id, processed_at)
VALUES (:consumer, :event_id, :processed_at);

-- The DAG an event is about, and whether the consumer handled that event already.
-- name: get_dag_for_event
SELECT dags.*,
       EXISTS (SELECT 1 FROM processed_events
               WHERE consumer = :consumer AND event_id = :event_id) AS event_processed
FROM dags WHERE id = :id;

-- Duplicates older than the retention are caught by the DAG's state instead.
-- name: purge_processed_events
DELETE FROM processed_events WHERE processed_at < :cutoff LIMIT :limit;

-- ---------------------------------------------------------------- watcher

-- DAGs whose current state outlived its deadline; served by (state, deadline_at), so
-- finished DAGs (deadline NULL, other states) cost nothing however many there are.
-- name: overdue_dags
SELECT * FROM dags
WHERE state = :state AND deadline_at <= :now
ORDER BY deadline_at
LIMIT :limit;

-- RUNNING DAGs past their own timeout_seconds; served by (state, timeout_at).
-- name: timed_out_dags
SELECT * FROM dags
WHERE state = 'RUNNING' AND timeout_at <= :now
ORDER BY timeout_at
LIMIT :limit;

-- name: count_live_dags
SELECT state, COUNT(*) FROM dags
WHERE state IN ('PENDING', 'TRIGGERING', 'RUNNING', 'CANCELLING')
GROUP BY state;

-- name: dag_states_by_id
SELECT id, state FROM dags WHERE id IN :ids;
