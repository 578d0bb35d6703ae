"""The task apps the benchmark runs: the same two bodies for every system.

``noop(i)`` returns ``i``; ``stamp(i)`` appends ``time.time()`` to $BENCH_STAMPS (latency).
The location of the files comes from $BENCH_DIR.
"""

from __future__ import annotations

import os
import time


def noop(i: int = 0) -> int:
    return i


def stamp(i: int = 0) -> int:
    with open(os.environ["BENCH_STAMPS"], "a") as handle:
        handle.write(f"{i} {time.time()!r}\n")
    return i
