"""SQL of the broker's dead-letter table (index stem_dead_letters_by_queue unless noted)."""

# Keyed by (namespace, id): dead-lettering the same id twice replaces the entry
# instead of failing after the job was already deleted.
UPSERT_DEAD_LETTER = """
INSERT INTO stem_dead_letters (namespace, id, queue, envelope, reason, meta, dead_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (namespace, id) DO UPDATE SET
    queue = excluded.queue, envelope = excluded.envelope, reason = excluded.reason,
    meta = excluded.meta, dead_at = excluded.dead_at
"""

LIST_DEAD_LETTERS = """
SELECT id, queue, envelope, reason, meta, dead_at FROM stem_dead_letters
WHERE namespace = ? AND queue = ? AND dead_at >= ?
ORDER BY dead_at DESC, id DESC
LIMIT ? OFFSET ?
"""

GET_DEAD_LETTER = """
SELECT id, queue, envelope, reason, meta, dead_at FROM stem_dead_letters
WHERE namespace = ? AND id = ? AND queue = ?
"""

DELETE_DEAD_LETTER = "DELETE FROM stem_dead_letters WHERE namespace = ? AND id = ?"

# A replayed job goes back only if no live job has its id (a re-published task
# may have taken it); otherwise the entry stays in the dead-letter store.
REINSERT_JOB = """
INSERT INTO stem_jobs (namespace, id, queue, priority, visible_at, lease_token, leased_by,
                       delivery_count, lease_ms, attempt, created_at, updated_at, envelope)
VALUES (:ns, :id, :queue, :priority, :visible_at, NULL, NULL, 0, :lease_ms, :attempt,
        :now, :now, :envelope)
ON CONFLICT (namespace, id) DO NOTHING
"""

PURGE_DEAD_LETTERS = """
DELETE FROM stem_dead_letters
WHERE namespace = :ns AND id IN (
    SELECT id FROM stem_dead_letters
    WHERE namespace = :ns AND queue = :queue AND dead_at >= :since
    ORDER BY dead_at DESC, id DESC
    LIMIT :limit)
"""

# Retention sweep; reads the primary key, as old entries of every queue go.
EXPIRE_DEAD_LETTERS = "DELETE FROM stem_dead_letters WHERE namespace = ? AND dead_at <= ?"
