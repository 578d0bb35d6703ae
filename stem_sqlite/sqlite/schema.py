"""Numbered schema migrations of the broker file and the result-backend file.

Each file records the version it is at in ``PRAGMA user_version`` and what it is
in ``PRAGMA application_id``, so a broker file can never be opened as a backend
(or the other way round) and a file from a newer release is left untouched.
Migrations only ever append to these lists.

Every time column is INTEGER milliseconds since the epoch (UTC). Every key
includes the namespace, so two namespaces in one file never collide.
"""

from __future__ import annotations

from dataclasses import dataclass

BROKER_APPLICATION_ID = 0x53544D42  # "STMB"
BACKEND_APPLICATION_ID = 0x53544D52  # "STMR"

ROLE_NAMES = {BROKER_APPLICATION_ID: "broker", BACKEND_APPLICATION_ID: "result backend"}

BROKER_MIGRATIONS: list[list[str]] = [
    # 1: jobs and dead letters.
    [
        # visible_at merges "not before" and "lease ends": a job can be claimed
        # exactly when visible_at <= now, so one index serves the claim whether
        # the queue holds ready, delayed or leased jobs.
        """CREATE TABLE stem_jobs (
            namespace TEXT NOT NULL,
            id TEXT NOT NULL,
            queue TEXT NOT NULL,
            priority INTEGER NOT NULL DEFAULT 0,
            visible_at INTEGER NOT NULL,
            lease_token TEXT,
            leased_by TEXT,
            delivery_count INTEGER NOT NULL DEFAULT 0,
            lease_ms INTEGER,
            attempt INTEGER NOT NULL DEFAULT 0,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            envelope TEXT NOT NULL,
            UNIQUE (namespace, id)
        )""",
        # Serves the claim: equality on (namespace, queue), then the order
        # priority DESC, visible_at ASC with the range visible_at <= now; rowid
        # (implicitly last in every index) breaks ties in insertion order.
        """CREATE INDEX stem_jobs_claim
            ON stem_jobs (namespace, queue, priority DESC, visible_at)""",
        """CREATE TABLE stem_dead_letters (
            namespace TEXT NOT NULL,
            id TEXT NOT NULL,
            queue TEXT NOT NULL,
            envelope TEXT NOT NULL,
            reason TEXT,
            meta TEXT NOT NULL DEFAULT '{}',
            dead_at INTEGER NOT NULL,
            PRIMARY KEY (namespace, id)
        ) WITHOUT ROWID""",
        """CREATE INDEX stem_dead_letters_by_queue
            ON stem_dead_letters (namespace, queue, dead_at DESC)""",
    ],
]

BACKEND_MIGRATIONS: list[list[str]] = [
    # 1: task results, groups and their results, worker heartbeats.
    [
        """CREATE TABLE stem_task_results (
            namespace TEXT NOT NULL,
            id TEXT NOT NULL,
            state TEXT NOT NULL,
            queue TEXT,
            payload TEXT,
            error TEXT,
            attempt INTEGER NOT NULL DEFAULT 0,
            meta TEXT NOT NULL DEFAULT '{}',
            revision INTEGER NOT NULL DEFAULT 1,
            owner TEXT,
            epoch INTEGER,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            PRIMARY KEY (namespace, id)
        ) WITHOUT ROWID""",
        "CREATE INDEX stem_task_results_recent ON stem_task_results (namespace, updated_at DESC)",
        "CREATE INDEX stem_task_results_expiry ON stem_task_results (expires_at)",
        """CREATE TABLE stem_groups (
            namespace TEXT NOT NULL,
            id TEXT NOT NULL,
            expected INTEGER NOT NULL,
            meta TEXT NOT NULL DEFAULT '{}',
            chord_claimed INTEGER NOT NULL DEFAULT 0,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            PRIMARY KEY (namespace, id)
        ) WITHOUT ROWID""",
        "CREATE INDEX stem_groups_expiry ON stem_groups (expires_at)",
        """CREATE TABLE stem_group_results (
            namespace TEXT NOT NULL,
            group_id TEXT NOT NULL,
            task_id TEXT NOT NULL,
            position INTEGER,
            state TEXT NOT NULL,
            payload TEXT,
            error TEXT,
            attempt INTEGER NOT NULL DEFAULT 0,
            meta TEXT NOT NULL DEFAULT '{}',
            created_at INTEGER NOT NULL,
            PRIMARY KEY (namespace, group_id, task_id)
        ) WITHOUT ROWID""",
        """CREATE TABLE stem_worker_heartbeats (
            namespace TEXT NOT NULL,
            worker_id TEXT NOT NULL,
            timestamp INTEGER NOT NULL,
            inflight INTEGER NOT NULL,
            queues TEXT NOT NULL,
            concurrency INTEGER NOT NULL,
            last_lease_renewal INTEGER,
            version TEXT NOT NULL,
            extras TEXT NOT NULL DEFAULT '{}',
            expires_at INTEGER NOT NULL,
            PRIMARY KEY (namespace, worker_id)
        ) WITHOUT ROWID""",
        "CREATE INDEX stem_worker_heartbeats_expiry ON stem_worker_heartbeats (expires_at)",
    ],
]


@dataclass(frozen=True)
class Role:
    """What a file is for: its application id, its migrations, the variable that names it."""

    name: str
    application_id: int
    migrations: list[list[str]]
    env_hint: str


BROKER = Role("broker", BROKER_APPLICATION_ID, BROKER_MIGRATIONS, "STEM_SQLITE_BROKER_PATH")
BACKEND = Role(
    "result backend", BACKEND_APPLICATION_ID, BACKEND_MIGRATIONS, "STEM_SQLITE_BACKEND_PATH"
)
