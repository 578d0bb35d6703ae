"""SQL of the broker's job table. Each statement names the index that serves it."""

# Insert, or replace in place a job that nobody holds. A job whose lease is still
# running is left alone (rowcount 0): re-publishing it must not break that lease.
# Served by the UNIQUE (namespace, id) index.
UPSERT_JOB = """
INSERT INTO stem_jobs (namespace, id, queue, priority, visible_at, lease_token, leased_by,
                       delivery_count, lease_ms, attempt, created_at, updated_at, envelope)
VALUES (:ns, :id, :queue, :priority, :visible_at, NULL, NULL, 0, :lease_ms, :attempt,
        :now, :now, :envelope)
ON CONFLICT (namespace, id) DO UPDATE SET
    queue = excluded.queue, priority = excluded.priority, visible_at = excluded.visible_at,
    lease_token = NULL, leased_by = NULL, delivery_count = 0, lease_ms = excluded.lease_ms,
    attempt = excluded.attempt, updated_at = excluded.updated_at, envelope = excluded.envelope
WHERE stem_jobs.lease_token IS NULL OR stem_jobs.visible_at <= excluded.updated_at
"""

# A job whose id was just made (publish_copies): nothing to replace. Positional, for
# the bulk path. Served by the UNIQUE (namespace, id) index, which refuses a collision.
INSERT_FRESH_JOB = """
INSERT INTO stem_jobs (namespace, id, queue, priority, visible_at, lease_token, leased_by,
                       delivery_count, lease_ms, attempt, created_at, updated_at, envelope)
VALUES (?, ?, ?, ?, ?, NULL, NULL, 0, ?, ?, ?, ?, ?)
"""

# Claim up to :n jobs in one statement. The subquery walks the index
# stem_jobs_claim (namespace, queue, priority DESC, visible_at) from its start
# and stops after :n rows, so its cost does not grow with delayed or leased jobs
# (they sort after every visible job of the same priority).
CLAIM_JOBS = """
UPDATE stem_jobs
SET lease_token = :token, leased_by = :consumer, delivery_count = delivery_count + 1,
    visible_at = :now + COALESCE(lease_ms, :default_lease_ms), updated_at = :now
WHERE rowid IN (
    SELECT rowid FROM stem_jobs
    WHERE namespace = :ns AND queue = :queue AND visible_at <= :now
    ORDER BY priority DESC, visible_at, rowid
    LIMIT :n)
RETURNING rowid, id, priority, visible_at, delivery_count, envelope
"""

CLAIM_SUBQUERY_PLAN = """
SELECT rowid FROM stem_jobs
WHERE namespace = :ns AND queue = :queue AND visible_at <= :now
ORDER BY priority DESC, visible_at, rowid
LIMIT :n
"""

# Every lease operation below is fenced by the lease token: a receipt whose
# lease was taken over by another consumer matches no row. Served by UNIQUE (namespace, id).
ACK_JOB = "DELETE FROM stem_jobs WHERE namespace = ? AND id = ? AND lease_token = ?"

RELEASE_JOB = """
UPDATE stem_jobs SET lease_token = NULL, leased_by = NULL, visible_at = :now, updated_at = :now
WHERE namespace = :ns AND id = :id AND lease_token = :token
"""

EXTEND_LEASE = """
UPDATE stem_jobs SET visible_at = :until, updated_at = :now
WHERE namespace = :ns AND id = :id AND lease_token = :token
"""

RESCHEDULE_JOB = """
UPDATE stem_jobs SET queue = :queue, priority = :priority, visible_at = :visible_at,
    lease_token = NULL, leased_by = NULL, delivery_count = 0, lease_ms = :lease_ms,
    attempt = :attempt, updated_at = :now, envelope = :envelope
WHERE namespace = :ns AND id = :id AND lease_token = :token
"""

TAKE_LEASED_JOB = """
DELETE FROM stem_jobs WHERE namespace = ? AND id = ? AND lease_token = ?
RETURNING queue, envelope
"""

PURGE_QUEUE = "DELETE FROM stem_jobs WHERE namespace = ? AND queue = ?"

# Counts use the claim index: equality on (namespace, queue), then a filter on visible_at.
COUNT_PENDING = """
SELECT count(*) FROM stem_jobs WHERE namespace = ? AND queue = ? AND visible_at <= ?
"""
COUNT_INFLIGHT = """
SELECT count(*) FROM stem_jobs
WHERE namespace = ? AND queue = ? AND visible_at > ? AND lease_token IS NOT NULL
"""
COUNT_DELAYED = """
SELECT count(*) FROM stem_jobs
WHERE namespace = ? AND queue = ? AND visible_at > ? AND lease_token IS NULL
"""

LIST_QUEUES = """
SELECT DISTINCT queue FROM stem_jobs WHERE namespace = :ns
UNION
SELECT DISTINCT queue FROM stem_dead_letters WHERE namespace = :ns
ORDER BY 1
"""
