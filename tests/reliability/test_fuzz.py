"""Fuzzing of every way in: the library's enqueue inputs and ``stem-enqueue`` arguments.

Every generated input must be either accepted (and then stored so that a worker can
read it back: the stored envelope decodes to what was given) or refused with a
StemError (InvalidArgument / InvalidPayload are its ValueError / TypeError kinds) that
carries a message; never any other exception, never a traceback, and a refused input
leaves the broker file exactly as it was.

The command line is fuzzed in-process through ``stem_cli.errors.run_app`` (thousands of
cases: exit 0 or 2, one line on stderr with 2) and, for a few dozen cases, through the
real ``stem-enqueue`` console script.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from stem_cli.enqueue import cli
from stem_cli.errors import run_app

from stem_sqlite import EnqueueOptions, Envelope, SqliteBroker, Stem, StemError
from stem_sqlite.sqlite.rows import decode_envelope
from tests.conftest import TOOL_ENVIRONMENT

BIN = Path(sys.executable).parent
SEED_ID = "seed-job"
CLEARED = TOOL_ENVIRONMENT

# -- the broker file, seen from outside ----------


class Store:
    """The broker file read (and reset) with plain sqlite3, independently of the library.

    Between cases it holds exactly one pending job, ``seed-job``, so that a task id can
    replace an existing job and every dump is small.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        with SqliteBroker.open(path, sweeper_interval=0) as broker:
            broker.publish(self.seed())
        self.seed_rows = self.dump()

    @staticmethod
    def seed() -> Envelope:
        return Envelope("stem.echo", args=["seed"], id=SEED_ID, queue="default")

    def dump(self) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.path)
        try:
            jobs = conn.execute(
                "SELECT namespace, id, queue, priority, visible_at, lease_token, attempt, "
                "envelope FROM stem_jobs ORDER BY rowid"
            ).fetchall()
            dead = conn.execute("SELECT * FROM stem_dead_letters").fetchall()
            return [*jobs, ("dead letters", *dead)]
        finally:
            conn.close()

    def reset(self) -> None:
        """Back to the seed job alone."""
        if self.dump() == self.seed_rows:
            return
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("DELETE FROM stem_jobs")
            conn.execute("DELETE FROM stem_dead_letters")
        finally:
            conn.close()
        with SqliteBroker.open(self.path, sweeper_interval=0) as broker:
            broker.publish(self.seed())
        self.seed_rows = self.dump()

    def stored(self, job_id: str) -> Envelope:
        """The stored envelope of ``job_id``, decoded as a worker decodes it."""
        conn = sqlite3.connect(self.path)
        try:
            row = conn.execute("SELECT envelope FROM stem_jobs WHERE id = ?", (job_id,)).fetchone()
        finally:
            conn.close()
        assert row is not None, f"the accepted job {job_id!r} is not in the broker file"
        try:
            return decode_envelope(row[0])
        except Exception as exc:  # noqa: BLE001 - the failure is the finding
            pytest.fail(
                f"an accepted job was stored so that no worker can read it "
                f"({type(exc).__name__}: {exc}): {row[0][:300]}"
            )


def as_json(value: Any) -> Any:
    """What a JSON round trip gives back for an accepted value (tuples become lists;
    keys are kept as they are, so a key that JSON would turn into text shows up)."""
    if isinstance(value, (list, tuple)):
        return [as_json(item) for item in value]
    if isinstance(value, dict):
        return {key: as_json(item) for key, item in value.items()}
    return value


# -- strategies ----------


class HugeInt(int):
    """An int too long for ``str()`` (over 4300 digits), with a repr that still works."""

    def __repr__(self) -> str:
        return "<an int of 5001 digits>"


HUGE = HugeInt(10**5000)

SPICY = ["'", '"', ";", "-", "\\", "\n", "\x00", "é", "🙂", "\ud800", "\udcff", " "]
ALPHABET = st.one_of(st.characters(exclude_categories=()), st.sampled_from(SPICY))
texts = st.text(ALPHABET, max_size=12)
SQLISH = ["x'; DROP TABLE stem_jobs; --", 'q"); DELETE FROM stem_jobs; --', "a%s{0}"]

names = st.one_of(
    st.sampled_from(["stem.echo", "fuzz.task", "", "   ", "os.system", *SQLISH]),
    texts,
    st.integers(),
    st.none(),
    st.binary(max_size=3),
)
queue_names = st.one_of(
    st.none(),
    st.sampled_from(["default", "other", "", "  ", "q" * 201, *SQLISH]),
    texts,
    st.integers(),
)
ids = st.one_of(st.none(), st.just(SEED_ID), texts, st.integers(), st.sampled_from(["", " "]))
big_ints = st.one_of(
    st.integers(-3, 3),
    st.integers(),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 10**30]),
)
priorities = st.one_of(st.none(), big_ints, st.booleans(), st.floats(), texts)
offsets = st.integers(-23 * 60, 23 * 60).map(lambda m: timezone(timedelta(minutes=m)))
instants = st.one_of(
    st.datetimes(),  # naive
    st.datetimes(timezones=offsets),  # aware, years 1 to 9999
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=offsets),
)
durations = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-10, 1e6),
    big_ints,
    st.timedeltas(),
    st.booleans(),
    texts,
)
maybe_durations = st.one_of(st.none(), durations)
non_json = st.one_of(
    st.builds(object),
    st.datetimes(),
    st.sets(st.integers(), max_size=2),
    st.binary(max_size=3),
    st.decimals(allow_nan=True),
    st.builds(complex, st.integers(), st.integers()),
    st.just(Decimal("1.5")),
    st.just(HUGE),  # more digits than int() will turn into text
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    big_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    texts,
)
keys = st.one_of(
    texts, st.integers(), st.none(), st.booleans(), st.floats(), st.tuples(st.integers())
)
json_values = st.recursive(
    scalars,
    lambda kids: st.one_of(
        st.lists(kids, max_size=3),
        st.tuples(kids, kids),
        st.dictionaries(texts, kids, max_size=3),
    ),
    max_leaves=8,
)
values = st.recursive(
    st.one_of(scalars, scalars, non_json),
    lambda kids: st.one_of(
        st.lists(kids, max_size=3),
        st.tuples(kids, kids),
        st.dictionaries(keys, kids, max_size=3),
    ),
    max_leaves=8,
)
kwargs_inputs = st.one_of(
    st.dictionaries(texts, json_values, max_size=3),
    st.dictionaries(keys, values, max_size=3),
    st.none(),
    st.lists(values, max_size=2),
    texts,
)
args_inputs = st.one_of(
    st.lists(json_values, max_size=3),
    st.lists(values, max_size=3),
    st.tuples(values),
    st.none(),
    texts,
    st.dictionaries(texts, values, max_size=2),
)
maps = st.one_of(st.none(), st.dictionaries(keys, values, max_size=2), st.lists(values, max_size=1))


@dataclass
class Call:
    """One generated way of enqueueing (shown by Hypothesis when it fails)."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)


options = st.fixed_dictionaries(
    {},
    optional={
        "task_id": ids,
        "queue": queue_names,
        "priority": priorities,
        "countdown": maybe_durations,
        "eta": st.one_of(st.none(), instants, texts),
        "expires": st.one_of(st.none(), durations, instants),
        "max_retries": st.one_of(st.none(), big_ints, texts),
        "visibility_timeout": maybe_durations,
        "time_limit": maybe_durations,
        "ignore_result": st.one_of(st.none(), st.booleans()),
        "headers": maps,
        "meta": maps,
    },
)
envelope_fields = st.fixed_dictionaries(
    {"name": names},
    optional={
        "args": args_inputs,
        "kwargs": kwargs_inputs,
        "id": ids,
        "queue": queue_names,
        "priority": priorities,
        "attempt": big_ints,
        "max_retries": big_ints,
        "not_before": st.one_of(st.none(), instants, texts),
        "enqueued_at": st.one_of(instants, texts),
        "visibility_timeout": maybe_durations,
        "headers": maps,
        "meta": maps,
    },
)
calls = st.one_of(
    st.builds(
        Call,
        st.just("enqueue"),
        st.fixed_dictionaries(
            {"name": names, "args": args_inputs, "kwargs": kwargs_inputs, "options": options},
            optional={"strict": st.booleans()},
        ),
    ),
    st.builds(
        Call,
        st.just("apply_async"),
        st.fixed_dictionaries(
            {"args": args_inputs, "kwargs": kwargs_inputs, "options": options},
            optional={"unknown_option": st.booleans()},
        ),
    ),
    st.builds(
        Call,
        st.just("publish"),
        st.fixed_dictionaries(
            {"envelope": envelope_fields},
            optional={"queue": queue_names, "priority": priorities},
        ),
    ),
    st.builds(
        Call,
        st.just("publish_many"),
        st.fixed_dictionaries({"envelopes": st.lists(envelope_fields, min_size=1, max_size=3)}),
    ),
)


# -- running one library case ----------


def perform(app: Stem, call: Call) -> list[tuple[str, dict[str, Any]]]:
    """Run the call; return (stored id, what must read back) for each job it stored."""
    p = call.params
    if call.kind == "enqueue":
        result = app.enqueue(
            p["name"],
            p["args"],
            p["kwargs"],
            options=EnqueueOptions(**p["options"]),
            strict=p.get("strict", True),
        )
        return [(result.id, {"name": p["name"], "args": p["args"], "kwargs": p["kwargs"]})]
    if call.kind == "apply_async":
        extra = {"bogus_option": 1} if p.get("unknown_option") else {}
        result = app.tasks["fuzz.task"].apply_async(p["args"], p["kwargs"], **p["options"], **extra)
        return [(result.id, {"name": "fuzz.task", "args": p["args"], "kwargs": p["kwargs"]})]
    if call.kind == "publish":
        envelope = Envelope(**p["envelope"])
        app.broker.publish(envelope, queue=p.get("queue"), priority=p.get("priority"))
        expected = envelope.to_dict()
        if p.get("queue") is not None:
            expected["queue"] = p["queue"].strip()
        if p.get("priority") is not None:
            expected["priority"] = p["priority"]
        return [(envelope.id, {"envelope": expected})]
    envelopes = [Envelope(**fields) for fields in p["envelopes"]]
    app.broker.publish_many(envelopes)
    last = {e.id: e for e in envelopes}  # a repeated id: the last one wins
    return [(job_id, {"envelope": e.to_dict()}) for job_id, e in last.items()]


def check_read_back(store: Store, job_id: str, expected: dict[str, Any]) -> None:
    stored = store.stored(job_id)
    if "envelope" in expected:
        want = as_json(expected["envelope"])
        got = stored.to_dict()
        for key in ("name", "args", "kwargs", "queue", "priority", "not_before", "meta"):
            assert got[key] == want[key], f"{key} was stored as {got[key]!r}, given {want[key]!r}"
        return
    assert stored.name == expected["name"]
    assert list(stored.args) == as_json(list(expected["args"] or ()))
    assert stored.kwargs == as_json(dict(expected["kwargs"] or {}))


def check_library_case(app: Stem, store: Store, call: Call) -> str:
    """Run one case and check the rules; returns "accepted" or "refused"."""
    before = store.dump()
    try:
        stored = perform(app, call)
    except StemError as exc:
        assert str(exc).strip(), f"{type(exc).__name__} without a message"
        assert store.dump() == before, "a refused input changed the broker file"
        return "refused"
    try:
        for job_id, expected in stored:
            check_read_back(store, job_id, expected)
    finally:
        store.reset()
    return "accepted"


@pytest.fixture
def fuzz_app(tmp_path: Path) -> Any:
    store = Store(tmp_path / "broker.sqlite")
    broker = SqliteBroker.open(store.path, sweeper_interval=0)
    app = Stem(broker=broker)

    @app.task(name="fuzz.task")
    def fuzz_task(*args: Any, **kwargs: Any) -> None:
        return None

    yield app, store
    broker.close()


@settings(
    max_examples=2500,
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(call=calls)
def test_library_enqueue_inputs_are_accepted_or_refused_cleanly(
    fuzz_app: tuple[Stem, Store], call: Call
) -> None:
    app, store = fuzz_app
    check_library_case(app, store, call)


# Inputs found by reading the code, kept as named cases so that each shows on its own.
NOW_AWARE = datetime(2030, 1, 1, tzinfo=UTC)
LIBRARY_EDGES = {
    "name-with-lone-surrogate": Call(
        "enqueue", {"name": "x\ud800", "args": (), "kwargs": None, "options": {}, "strict": False}
    ),
    "kwargs-with-lone-surrogate": Call(
        "enqueue", {"name": "stem.echo", "args": (), "kwargs": {"a": "\udcff"}, "options": {}}
    ),
    "priority-past-64-bits": Call(
        "enqueue", {"name": "stem.echo", "args": (), "kwargs": None, "options": {"priority": 2**63}}
    ),
    "override-priority-past-64-bits": Call(
        "publish", {"envelope": {"name": "x"}, "priority": 2**64}
    ),
    "visibility-timeout-1e300": Call(
        "enqueue",
        {"name": "stem.echo", "args": (), "kwargs": None, "options": {"visibility_timeout": 1e300}},
    ),
    "countdown-1e300": Call(
        "enqueue",
        {"name": "stem.echo", "args": (), "kwargs": None, "options": {"countdown": 1e300}},
    ),
    "countdown-past-year-9999": Call(
        "enqueue", {"name": "stem.echo", "args": (), "kwargs": None, "options": {"countdown": 3e11}}
    ),
    "expires-1e300": Call(
        "enqueue", {"name": "stem.echo", "args": (), "kwargs": None, "options": {"expires": 1e300}}
    ),
    "eta-year-9999-west-of-utc": Call(
        "enqueue",
        {
            "name": "stem.echo",
            "args": (),
            "kwargs": None,
            "options": {"eta": datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))},
        },
    ),
    "eta-year-1": Call(
        "enqueue",
        {
            "name": "stem.echo",
            "args": (),
            "kwargs": None,
            "options": {"eta": datetime(1, 1, 1, tzinfo=UTC)},
        },
    ),
    "not-before-year-999": Call(
        "publish", {"envelope": {"name": "x", "not_before": datetime(999, 1, 1, tzinfo=UTC)}}
    ),
    "int-key-in-kwargs": Call(
        "enqueue", {"name": "stem.echo", "args": (), "kwargs": {1: "one"}, "options": {}}
    ),
    "bool-key-colliding-with-text-key": Call(
        "enqueue", {"name": "stem.echo", "args": (), "kwargs": {True: 1, "true": 2}, "options": {}}
    ),
    "name-none": Call("enqueue", {"name": None, "args": (), "kwargs": None, "options": {}}),
    "headers-not-a-dict": Call(
        "enqueue", {"name": "stem.echo", "args": (), "kwargs": None, "options": {"headers": [1]}}
    ),
    "kwargs-not-a-dict": Call(
        "enqueue", {"name": "stem.echo", "args": (), "kwargs": [1, 2], "options": {}}
    ),
    "kwargs-text": Call(
        "enqueue", {"name": "stem.echo", "args": (), "kwargs": "ab", "options": {}}
    ),
    "meta-not-a-dict": Call(
        "enqueue", {"name": "stem.echo", "args": (), "kwargs": None, "options": {"meta": [1]}}
    ),
    # Refused cleanly today (kept so that they stay so):
    "nan": Call(
        "enqueue", {"name": "stem.echo", "args": (), "kwargs": {"a": math.nan}, "options": {}}
    ),
    "int-with-5000-digits": Call(
        "enqueue", {"name": "stem.echo", "args": [HUGE], "kwargs": None, "options": {}}
    ),
    "naive-eta": Call(
        "enqueue",
        {"name": "stem.echo", "args": (), "kwargs": None, "options": {"eta": datetime(2030, 1, 1)}},
    ),
    "object-in-args": Call(
        "enqueue", {"name": "stem.echo", "args": [object()], "kwargs": None, "options": {}}
    ),
    "args-text": Call(
        "enqueue", {"name": "stem.echo", "args": "abc", "kwargs": None, "options": {}}
    ),
    "unregistered-name": Call(
        "enqueue", {"name": "no.such.task", "args": (), "kwargs": None, "options": {}}
    ),
    "sql-in-names": Call(
        "publish",
        {"envelope": {"name": SQLISH[0], "queue": SQLISH[1], "kwargs": {SQLISH[0]: SQLISH[2]}}},
    ),
    "aware-eta": Call(
        "enqueue", {"name": "stem.echo", "args": (), "kwargs": None, "options": {"eta": NOW_AWARE}}
    ),
}


@pytest.mark.parametrize("case", sorted(LIBRARY_EDGES))
def test_library_enqueue_edge_inputs(fuzz_app: tuple[Stem, Store], case: str) -> None:
    app, store = fuzz_app
    check_library_case(app, store, LIBRARY_EDGES[case])


def test_self_referential_arguments_are_refused(fuzz_app: tuple[Stem, Store]) -> None:
    app, store = fuzz_app
    loop: list[Any] = []
    loop.append(loop)
    assert (
        check_library_case(
            app,
            store,
            Call("enqueue", {"name": "stem.echo", "args": [loop], "kwargs": None, "options": {}}),
        )
        == "refused"
    )


# -- the command line ----------


def cli_texts(alphabet: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.text(alphabet, max_size=10)


def json_texts(alphabet: st.SearchStrategy[str], *, raw: bool) -> st.SearchStrategy[str]:
    """JSON text (with raw non-ASCII, lone surrogates included, when ``raw``)."""
    return st.one_of(
        json_values.map(lambda v: json.dumps(v, ensure_ascii=not raw)),
        st.sampled_from(
            ['{"a": NaN}', '{"a": 1e999}', "[1, 2", "{}", "[]", "null", '"text"', '{"x": 1}']
        ),
        st.integers(1, 3000).map(lambda n: "[" * n + "]" * n),
        st.integers(2000, 20000).map(lambda n: "[" * n),
        cli_texts(alphabet),
    )


def cli_argvs(alphabet: st.SearchStrategy[str], *, raw: bool) -> st.SearchStrategy[list[str]]:
    text = cli_texts(alphabet)
    number_texts = st.one_of(
        big_ints.map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.sampled_from(["1e300", "3e11", "-1", "0", "nan", "inf", "-inf", "1_000", "0x10"]),
        text,
    )
    when_texts = st.one_of(
        instants.map(lambda d: d.isoformat()),
        st.sampled_from(
            ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59-05:00", "2030-01-01", "soon", ""]
        ),
        text,
    )
    option = st.one_of(
        st.tuples(st.sampled_from(["--kwargs"]), json_texts(alphabet, raw=raw)),
        st.tuples(st.sampled_from(["-Q", "--queue"]), st.one_of(text, st.sampled_from(SQLISH))),
        st.tuples(st.just("--priority"), number_texts),
        st.tuples(st.just("--countdown"), number_texts),
        st.tuples(st.just("--eta"), when_texts),
        st.tuples(st.just("--expires"), st.one_of(number_texts, when_texts)),
        st.tuples(st.just("--task-id"), st.one_of(text, st.just(SEED_ID))),
        st.tuples(st.just("--max-retries"), number_texts),
        st.tuples(st.just("--count"), st.one_of(st.integers(0, 3).map(str), text)),
        st.tuples(st.sampled_from(["--ignore-result", "--json", "--no-ignore-result"])),
        st.tuples(st.sampled_from(["--bogus", "-z"])),
    )
    task = st.one_of(
        st.sampled_from(["stem.echo", "stem.sleep", "fuzz.unknown", "", " ", "-x", *SQLISH]),
        text,
    )
    value = st.one_of(
        json_texts(alphabet, raw=raw),
        st.tuples(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,5}", fullmatch=True), text).map(
            lambda kv: f"{kv[0]}={kv[1]}"
        ),
        text,
    )
    return st.builds(
        lambda t, vs, opts: [t, *vs, *[part for o in opts for part in o]],
        task,
        st.lists(value, max_size=3),
        st.lists(option, max_size=4),
    )


# In-process, argv may hold any text (a lone surrogate is what Python makes of bytes in
# argv that are not UTF-8). For a real process, argv must be encodable and NUL-free.
CLI_ALPHABET = ALPHABET
PROCESS_ALPHABET = st.one_of(
    st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
    st.sampled_from([c for c in SPICY if c not in ("\x00", "\ud800")]),
)


@dataclass
class CliOutcome:
    code: int
    stdout: str
    stderr: str


def run_in_process(argv: list[str]) -> CliOutcome:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_app(cli, "stem-enqueue", list(argv))
    return CliOutcome(code, out.getvalue(), err.getvalue())


def check_cli_outcome(
    store: Store, backend: Path, before: list[Any], done: CliOutcome, argv: list[str]
) -> None:
    # --debug asks for the traceback before the error line (generated text may be it).
    debug = "--debug" in argv
    if not debug:
        assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert done.code in (0, 2), f"exit {done.code}: {done.stderr}"
    assert not backend.exists(), "stem-enqueue (without --wait) created the result backend"
    if done.code == 2:
        lines = done.stderr.strip().splitlines()
        if debug:
            lines = lines[-1:]
        assert len(lines) == 1, f"not one line on stderr: {done.stderr!r}"
        assert lines[0].startswith("stem-enqueue: error: ") and len(lines[0]) > 21, lines
        assert store.dump() == before, "a refused command changed the broker file"
        return
    if done.stdout.startswith(("stem-sqlite ", "Usage:")):
        # --version and --help are eager: they answer and enqueue nothing.
        assert store.dump() == before, "--version/--help changed the broker file"
        return
    try:
        changed = [row for row in store.dump()[:-1] if row not in before]
        assert changed, "exit 0, but no job was stored"
        printed = done.stdout
        try:  # --json: ids are JSON-escaped (a plain id may start with "{" too)
            data = json.loads(done.stdout)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            printed = "\n".join(data.get("ids") or [data.get("id", "")])
        for row in changed:
            assert row[1] in printed, f"the id {row[1]!r} was not printed: {done.stdout!r}"
            store.stored(row[1])  # readable by a worker
    finally:
        store.reset()


@pytest.fixture
def cli_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Store, Path]:
    for name in CLEARED:
        monkeypatch.delenv(name, raising=False)
    broker = tmp_path / "work" / "broker.sqlite"
    backend = tmp_path / "work" / "backend.sqlite"
    broker.parent.mkdir()
    monkeypatch.setenv("STEM_SQLITE_BROKER_PATH", str(broker))
    monkeypatch.setenv("STEM_SQLITE_BACKEND_PATH", str(backend))
    return Store(broker), backend


@settings(
    max_examples=2000,
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(argv=cli_argvs(CLI_ALPHABET, raw=True))
def test_stem_enqueue_arguments_in_process(cli_store: tuple[Store, Path], argv: list[str]) -> None:
    store, backend = cli_store
    before = store.dump()
    done = run_in_process(argv)
    check_cli_outcome(store, backend, before, done, argv)


CLI_EDGES = {
    "priority-past-64-bits": ["stem.echo", "--priority", "99999999999999999999"],
    "countdown-1e300": ["stem.echo", "--countdown", "1e300"],
    "expires-1e300": ["stem.echo", "--expires", "1e300"],
    "eta-year-9999-west-of-utc": ["stem.echo", "--eta", "9999-12-31T23:59:59-05:00"],
    "eta-year-1": ["stem.echo", "--eta", "0001-01-01T00:00:00Z"],
    "argument-nested-too-deep": ["stem.echo", "[" * 100_000],
    "kwargs-nested-too-deep": ["stem.echo", "--kwargs", "[" * 100_000],
    "task-name-from-non-utf8-bytes": ["x\udcff"],
    "argument-from-non-utf8-bytes": ["stem.echo", "\udcff"],
    # Refused or accepted cleanly today (kept so that they stay so):
    "count-zero": ["stem.echo", "--count", "0"],
    "kwargs-not-an-object": ["stem.echo", "--kwargs", "[1]"],
    "kwargs-nan": ["stem.echo", "--kwargs", '{"a": NaN}'],
    "countdown-and-eta": ["stem.echo", "--countdown", "1", "--eta", "2030-01-01T00:00:00Z"],
    "naive-eta": ["stem.echo", "--eta", "2030-01-01T00:00:00"],
    "long-queue": ["stem.echo", "-Q", "q" * 201],
    "task-id-with-count": ["stem.echo", "--task-id", "a", "--count", "2"],
    "ordinary": ["stem.echo", "1", "x=1", "--kwargs", '{"y": 2}', "--count", "2", "--json"],
    "sql-in-names": ["x'; DROP TABLE stem_jobs; --", "-Q", "q'; DELETE FROM stem_jobs; --"],
    "replace-pending-job": ["stem.echo", "--task-id", SEED_ID],
    "debug-alone": ["--debug"],  # found by the generator: its traceback is asked for
}


@pytest.mark.parametrize("case", sorted(CLI_EDGES))
def test_stem_enqueue_edge_arguments(cli_store: tuple[Store, Path], case: str) -> None:
    store, backend = cli_store
    before = store.dump()
    done = run_in_process(CLI_EDGES[case])
    check_cli_outcome(store, backend, before, done, CLI_EDGES[case])


@settings(
    max_examples=25,
    deadline=None,
    report_multiple_bugs=False,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # a shrink step costs a process
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(argv=cli_argvs(PROCESS_ALPHABET, raw=False))
def test_stem_enqueue_console_script(cli_store: tuple[Store, Path], argv: list[str]) -> None:
    """The real console script: a few dozen generated cases (each start costs ~0.2 s)."""
    store, backend = cli_store
    before = store.dump()
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env["STEM_SQLITE_BROKER_PATH"] = str(store.path)
    env["STEM_SQLITE_BACKEND_PATH"] = str(backend)
    done = subprocess.run(
        [BIN / "stem-enqueue", *(os.fsencode(arg) for arg in argv)],
        cwd=store.path.parent,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )
    outcome = CliOutcome(
        done.returncode,
        done.stdout.decode("utf-8", "replace"),
        done.stderr.decode("utf-8", "replace"),
    )
    check_cli_outcome(store, backend, before, outcome, argv)
