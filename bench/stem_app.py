"""stem-sqlite's bench app: ``stem-worker --app bench/stem_app.py -Q bench``."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import apps

from stem_sqlite import Stem

folder = os.environ.get("BENCH_DIR", ".")
app = Stem()
app.configure(
    broker_path=os.path.join(folder, "stem_broker.sqlite"),
    backend_path=os.path.join(folder, "stem_backend.sqlite"),
)
noop = app.task(name="bench.noop", queue="bench")(apps.noop)
stamp = app.task(name="bench.stamp", queue="bench")(apps.stamp)
