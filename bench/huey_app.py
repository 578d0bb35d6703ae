"""Huey's bench app with its defaults (SqliteHuey: WAL, results stored)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import apps
from huey import SqliteHuey

huey = SqliteHuey("bench", filename=os.path.join(os.environ.get("BENCH_DIR", "."), "huey.db"))
noop = huey.task(name="bench.noop")(apps.noop)
stamp = huey.task(name="bench.stamp")(apps.stamp)
