"""SQL of the result backend. Each statement names the index that serves it."""

# Replace the whole record (the TTL restarts). revision counts writes so that
# watchers can tell a new write from one they have already seen.
# Served by the primary key (namespace, id).
UPSERT_STATUS = """
INSERT INTO stem_task_results (namespace, id, state, queue, payload, error, attempt, meta,
                               revision, owner, epoch, created_at, updated_at, expires_at)
VALUES (:ns, :id, :state, :queue, :payload, :error, :attempt, :meta, 1, :owner, :epoch, :now,
        :now, :expires_at)
ON CONFLICT (namespace, id) DO UPDATE SET
    state = excluded.state, queue = excluded.queue, payload = excluded.payload,
    error = excluded.error, attempt = excluded.attempt, meta = excluded.meta,
    revision = stem_task_results.revision + 1, owner = excluded.owner,
    epoch = COALESCE(excluded.epoch, stem_task_results.epoch),
    created_at = CASE WHEN stem_task_results.expires_at <= excluded.updated_at
                      THEN excluded.created_at ELSE stem_task_results.created_at END,
    updated_at = excluded.updated_at, expires_at = excluded.expires_at
"""

# A "queued" write never replaces a live record in another state: the worker may
# already have written running or a result for this very task.
UPSERT_QUEUED_SUFFIX = """
WHERE stem_task_results.state = 'queued' OR stem_task_results.expires_at <= excluded.updated_at
"""

# A write by the holder of one lease (``owner``) that reports an outcome never replaces
# a record that another lease has taken over: a worker that lost its lease while
# paused must not overwrite the newer run's status.
UPSERT_OWNED_SUFFIX = """
WHERE stem_task_results.owner IS NULL OR stem_task_results.owner = excluded.owner
   OR stem_task_results.expires_at <= excluded.updated_at
"""

# A lease that takes a record over (running, or settling a job it will not run) must be
# at least as new as the lease that wrote it: a worker that resumes after a pause with
# a lease long since taken over cannot turn the newer run's status back.
UPSERT_TAKE_OVER_SUFFIX = """
WHERE stem_task_results.epoch IS NULL OR excluded.epoch IS NULL
   OR excluded.epoch >= stem_task_results.epoch
   OR stem_task_results.expires_at <= excluded.updated_at
"""

# Every form of a status write, built once: SQLite's statement cache is keyed by the
# text, so a text assembled per write would cost a hash of ~1 kB each time. Keyed by
# the guard: None, "queued", "owned" or "take_over".
STATUS_WRITES: dict[str | None, str] = {
    None: UPSERT_STATUS,
    "queued": UPSERT_STATUS + UPSERT_QUEUED_SUFFIX,
    "owned": UPSERT_STATUS + UPSERT_OWNED_SUFFIX,
    "take_over": UPSERT_STATUS + UPSERT_TAKE_OVER_SUFFIX,
}
STATUS_WRITES_RETURNING = {
    guard: statement + " RETURNING revision" for guard, statement in STATUS_WRITES.items()
}

STATUS_COLUMNS = "id, state, payload, error, attempt, meta, revision, created_at, updated_at"

GET_STATUS = f"""
SELECT {STATUS_COLUMNS} FROM stem_task_results
WHERE namespace = ? AND id = ? AND expires_at > ?
"""

EXPIRE_STATUS = """
UPDATE stem_task_results SET expires_at = ? WHERE namespace = ? AND id = ?
"""

UPSERT_GROUP = """
INSERT INTO stem_groups (namespace, id, expected, meta, chord_claimed, created_at, updated_at,
                         expires_at)
VALUES (?, ?, ?, ?, 0, ?, ?, ?)
ON CONFLICT (namespace, id) DO UPDATE SET
    expected = excluded.expected, meta = excluded.meta, chord_claimed = 0,
    created_at = excluded.created_at, updated_at = excluded.updated_at,
    expires_at = excluded.expires_at
"""

GET_GROUP = """
SELECT expected, meta FROM stem_groups WHERE namespace = ? AND id = ? AND expires_at > ?
"""

DELETE_GROUP_RESULTS = "DELETE FROM stem_group_results WHERE namespace = ? AND group_id = ?"

UPSERT_GROUP_RESULT = """
INSERT INTO stem_group_results (namespace, group_id, task_id, position, state, payload, error,
                                attempt, meta, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (namespace, group_id, task_id) DO UPDATE SET
    position = excluded.position, state = excluded.state, payload = excluded.payload,
    error = excluded.error, attempt = excluded.attempt, meta = excluded.meta
"""

# Member order: the position given by the canvas, then arrival. Primary key prefix.
LIST_GROUP_RESULTS = """
SELECT task_id, state, payload, error, attempt, meta FROM stem_group_results
WHERE namespace = ? AND group_id = ?
ORDER BY position IS NULL, position, created_at, task_id
"""

# Exactly one caller wins: the update is conditional on the dedicated column.
# The first claim wins. The winner may claim again with the same ``claimed_by`` (the
# member task id): a re-run of that member after a crash resumes the dispatch.
CLAIM_CHORD = """
UPDATE stem_groups
SET chord_claimed = 1, updated_at = :now,
    meta = json_patch(  -- a merge patch: a NULL claimed_by adds no key
        json_set(meta, '$."stem.chord.claimed"', json('true'),
                 '$."stem.chord.callbackTaskId"', :callback,
                 '$."stem.chord.dispatchedAt"', :dispatched_at),
        json_object('stem.chord.claimedBy', :claimed_by))
WHERE namespace = :ns AND id = :id AND expires_at > :now
  AND (chord_claimed = 0
       OR (:claimed_by IS NOT NULL
           AND json_extract(meta, '$."stem.chord.claimedBy"') = :claimed_by))
"""

UPSERT_HEARTBEAT = """
INSERT INTO stem_worker_heartbeats (namespace, worker_id, timestamp, inflight, queues,
    concurrency, last_lease_renewal, version, extras, expires_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (namespace, worker_id) DO UPDATE SET
    timestamp = excluded.timestamp, inflight = excluded.inflight, queues = excluded.queues,
    concurrency = excluded.concurrency, last_lease_renewal = excluded.last_lease_renewal,
    version = excluded.version, extras = excluded.extras, expires_at = excluded.expires_at
"""

HEARTBEAT_COLUMNS = (
    "worker_id, timestamp, inflight, queues, concurrency, last_lease_renewal, version, extras"
)

GET_HEARTBEAT = f"""
SELECT {HEARTBEAT_COLUMNS} FROM stem_worker_heartbeats
WHERE namespace = ? AND worker_id = ? AND expires_at > ?
"""

LIST_HEARTBEATS = f"""
SELECT {HEARTBEAT_COLUMNS} FROM stem_worker_heartbeats
WHERE namespace = ? AND expires_at > ? ORDER BY worker_id
"""

# Cleanup uses the expiry indexes.
CLEANUP = [
    "DELETE FROM stem_task_results WHERE expires_at <= :now",
    """DELETE FROM stem_group_results WHERE (namespace, group_id) IN
       (SELECT namespace, id FROM stem_groups WHERE expires_at <= :now)""",
    "DELETE FROM stem_groups WHERE expires_at <= :now",
    "DELETE FROM stem_worker_heartbeats WHERE expires_at <= :now",
]
