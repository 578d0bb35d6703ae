"""A small end-to-end run of the SQLite engine: publish, consume in a thread, store results.

Run with ``./dev demo``. It uses two files in a temporary folder (broker and backend
are always separate files) and prints a table of every task it created.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

from stem_sqlite import Envelope, SqliteBroker, SqliteResultBackend, TaskState


def add(x: int, y: int) -> int:
    return x + y


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="stem-demo-"))
    broker = SqliteBroker.open(folder / "stem_broker.sqlite")
    backend = SqliteResultBackend.open(folder / "stem_backend.sqlite")
    envelopes = [Envelope("demo.add", args=(i, i * 10), priority=i % 3) for i in range(8)]
    broker.publish_many(envelopes)

    def consume() -> None:
        with broker.consume("default", prefetch=4) as consumer:
            for _ in envelopes:
                delivery = consumer.receive(timeout=5)
                if delivery is None:
                    return
                task = delivery.envelope
                backend.set(task.id, TaskState.RUNNING, attempt=task.attempt)
                result = add(*task.args)
                # The result is stored while the lease holds, then the job is acked.
                backend.set(task.id, TaskState.SUCCEEDED, payload=result, attempt=task.attempt)
                broker.ack(delivery)

    worker = threading.Thread(target=consume)
    worker.start()
    print(f"{'task id':38} {'name':10} {'state':10} result")
    for envelope in envelopes:
        status = backend.wait(envelope.id, timeout=10)
        print(f"{envelope.id:38} {envelope.name:10} {status.state.value:10} {status.payload}")
    worker.join()
    print(f"queue 'default' now holds {broker.pending_count('default')} jobs; files in {folder}")
    broker.close()
    backend.close()


if __name__ == "__main__":
    main()
