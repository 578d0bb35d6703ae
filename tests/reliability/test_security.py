"""Security: stored data is only ever JSON, SQL takes values only as parameters, the
database files are the owner's alone, and a job row cannot choose the code that runs."""

from __future__ import annotations

import ast
import json
import multiprocessing.connection
import os
import pickle
import pickletools
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stem_sqlite import (
    ConfigurationError,
    Envelope,
    InvalidArgument,
    SqliteBroker,
    SqliteResultBackend,
    Stem,
    TaskState,
)
from tests.reliability import fault_helpers
from tests.reliability.fault_helpers import run_burst

REPO = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = ("stem_sqlite", "cli")


def source_files() -> list[tuple[str, ast.Module]]:
    files = []
    for root in SOURCE_ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            files.append((str(path.relative_to(REPO)), ast.parse(path.read_text(), str(path))))
    assert len(files) > 30, "the source scan found (almost) nothing"
    return files


def functions_by_node(tree: ast.Module) -> dict[ast.AST, str]:
    """Every node of the tree, mapped to the name of the function that holds it."""
    owner: dict[ast.AST, str] = {}

    def visit(node: ast.AST, name: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = (
                child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else name
            )
            owner[child] = inner
            visit(child, inner)

    visit(tree, "<module>")
    return owner


# -- no pickle, eval or exec of stored data ----------

UNSAFE_MODULES = {"pickle", "_pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle"}
UNSAFE_MODULES |= {"jsonpickle", "yaml"}
UNSAFE_CALLS = {"eval", "exec", "compile", "__import__", "execfile"}
#: The one documented place where Python objects are pickled: the pipe between a worker
#: and its own pool processes (multiprocessing.Connection.send / recv).
POOL_PIPE_FILES = {"stem_sqlite/worker/processes.py", "stem_sqlite/worker/child.py"}
#: Where a module is imported by name: the app the user names with --app, and the module
#: of a *registered* task's function in a pool process.
IMPORT_BY_NAME_FILES = {"cli/loader.py", "stem_sqlite/worker/child.py"}


def test_no_pickle_marshal_eval_or_exec_anywhere_in_the_source() -> None:
    """No module of stem_sqlite/ or cli/ imports pickle, marshal, shelve (or a
    relative), or calls eval, exec, compile or __import__, so nothing read from a
    database can become code.

    One place pickles, by design: multiprocessing's Connection between a worker and its
    own pool processes (stem_sqlite/worker/processes.py and child.py). The pipe is
    private to two processes of the same program, and what the worker sends is built
    from decoded JSON (plain dicts, lists, strings, numbers): see
    test_pool_pipe_carries_only_plain_data, which pickles every message the worker sends
    and finds no opcode that could import or call anything. This test pins the pipe to
    those two files, and importing modules by name to the --app loader and the pool
    child.
    """
    problems: list[str] = []
    pipe_users: set[str] = set()
    importers: set[str] = set()
    for name, tree in source_files():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    root = alias.name.split(".")[0]
                    if root in UNSAFE_MODULES:
                        problems.append(f"{name}:{node.lineno} imports {alias.name}")
                    if root == "multiprocessing":
                        pipe_users.add(name)
                    if root == "importlib":
                        importers.add(name)
            elif isinstance(node, ast.ImportFrom):
                root = (node.module or "").split(".")[0]
                if root in UNSAFE_MODULES:
                    problems.append(f"{name}:{node.lineno} imports from {node.module}")
                if root == "multiprocessing":
                    pipe_users.add(name)
                if root == "importlib":
                    importers.add(name)
            elif isinstance(node, ast.Call):
                func = node.func
                called = (
                    func.id
                    if isinstance(func, ast.Name)
                    else func.attr
                    if isinstance(func, ast.Attribute)
                    else None
                )
                builtin = isinstance(func, ast.Name) or (
                    isinstance(func, ast.Attribute)
                    and isinstance(func.value, ast.Name)
                    and func.value.id == "builtins"
                )
                if called in UNSAFE_CALLS and builtin:
                    problems.append(f"{name}:{node.lineno} calls {ast.unparse(func)}")
                if called in ("send", "recv", "send_bytes", "recv_bytes"):
                    pipe_users.add(name)
                if called in ("import_module", "spec_from_file_location", "exec_module"):
                    importers.add(name)
    assert problems == []
    assert pipe_users <= POOL_PIPE_FILES, pipe_users - POOL_PIPE_FILES
    assert importers <= IMPORT_BY_NAME_FILES, importers - IMPORT_BY_NAME_FILES


#: Pickle opcodes that look up a global (import) or call something while unpickling.
CODE_OPCODES = {
    "GLOBAL",
    "STACK_GLOBAL",
    "REDUCE",
    "BUILD",
    "INST",
    "OBJ",
    "NEWOBJ",
    "NEWOBJ_EX",
    "EXT1",
    "EXT2",
    "EXT4",
    "PERSID",
    "BINPERSID",
}


def plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(plain(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain(v) for k, v in value.items())
    return False


def test_pool_pipe_carries_only_plain_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job whose stored arguments imitate pickle payloads runs in a pool process; every
    message the worker sends down the pipe holds only plain JSON values (so its pickle
    has no opcode that imports or calls anything), and the function the child is told
    to import is the registered one, not anything named by the job row."""
    sent: list[Any] = []
    original = multiprocessing.connection.Connection.send

    def recording_send(self: Any, obj: Any) -> None:
        sent.append(obj)
        original(self, obj)

    monkeypatch.setattr(multiprocessing.connection.Connection, "send", recording_send)
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Boom(str(marker)), protocol=0).decode("latin-1")
    nasty = {
        "__reduce__": ["os.system", f"touch {marker}"],
        "py/object": "os.system",
        "payload": payload,
        "nested": [payload, {"cos\nsystem\n": "(S'id'\ntR."}],
    }
    broker = SqliteBroker.open(tmp_path / "broker.sqlite", poll_interval=0.02, sweeper_interval=0)
    backend = SqliteResultBackend.open(tmp_path / "backend.sqlite", poll_interval=0.02)
    app = Stem(broker=broker, backend=backend)
    app.task(name="sec.echo")(fault_helpers.echo_value)
    try:
        result = app.tasks["sec.echo"].delay(nasty)
        run_burst(app, pool="processes", concurrency=1, timeout=60)
        assert result.get(timeout=5) == nasty
    finally:
        broker.close()
        backend.close()
    assert not marker.exists()
    runs = [m for m in sent if isinstance(m, tuple) and m and m[0] == "run"]
    assert len(runs) == 1, sent
    _, module, qualname, _main_file, _bind, envelope = runs[0]
    assert (module, qualname) == ("tests.reliability.fault_helpers", "echo_value")
    assert envelope["name"] == "sec.echo" and envelope["args"] == [nasty]
    for message in sent:
        assert plain(message), f"a non-JSON value was sent to a pool process: {message!r}"
        ops = {op.name for op, _, _ in pickletools.genops(pickle.dumps(message, protocol=5))}
        assert not ops & CODE_OPCODES, (message, ops & CODE_OPCODES)


class _Boom:
    """Unpickling this object would create a file (what a hostile payload would do)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (fault_helpers.write_marker, (self.path,))


# -- SQL only with parameters ----------

SQL_WORDS = re.compile(
    r"\b(SELECT|INSERT|UPDATE|DELETE|PRAGMA|WHERE|FROM|VALUES|CREATE|DROP|ALTER|JOIN|LIMIT)\b"
)
EXECUTORS = {"execute", "executemany", "executescript", "write_one"}
#: The interpolations allowed in SQL text: (file, function, interpolated expressions).
#: Each one is a fixed internal fragment or a checked constant, never a caller's value:
#: - status_queries: WHERE clauses joined by ``_filters`` from constant fragments (the
#:   values, the meta-key JSON paths included, are parameters; checked below);
#: - connection: PRAGMA values that are constants or checked ints/keywords
#:   (``synchronous`` is one of SYNCHRONOUS_MODES, see the runtime test).
ALLOWED_INTERPOLATIONS = {
    ("stem_sqlite/sqlite/status_queries.py", "list_task_statuses", ("where",)),
    ("stem_sqlite/sqlite/status_queries.py", "count_task_statuses", ("where",)),
    ("stem_sqlite/sqlite/connection.py", "_connect", ("synchronous",)),
    ("stem_sqlite/sqlite/connection.py", "_migrate", ("number",)),
    ("stem_sqlite/sqlite/connection.py", "_migrate", ("role.application_id",)),
}


def module_string_constants(tree: ast.Module) -> set[str]:
    """Names bound at module level, once, to a plain string literal."""
    counts: dict[str, int] = {}
    literal: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    counts[target.id] = counts.get(target.id, 0) + 1
                    value = node.value
                    if isinstance(value, ast.Constant) and isinstance(value.value, str):
                        literal.add(target.id)
    return {name for name in literal if counts[name] == 1}


def test_sql_text_never_interpolates_values() -> None:
    """Every f-string, %-format or .format() that builds SQL is either a fixed fragment
    (a module constant inside a module constant) or one of ALLOWED_INTERPOLATIONS, and
    every execute()/write_one() gets a literal, a *_sql module constant, or a local
    built only from those."""
    problems: list[str] = []
    seen_allowed: set[tuple[str, str, tuple[str, ...]]] = set()
    for name, tree in source_files():
        owner = functions_by_node(tree)
        constants = module_string_constants(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr):
                text = "".join(
                    v.value for v in node.values if isinstance(v, ast.Constant) and v.value
                )
                if not SQL_WORDS.search(text):
                    continue
                parts = tuple(
                    ast.unparse(v.value) for v in node.values if isinstance(v, ast.FormattedValue)
                )
                key = (name, owner.get(node, "<module>"), parts)
                if key in ALLOWED_INTERPOLATIONS:
                    seen_allowed.add(key)
                elif key[1] == "<module>" and all(p in constants for p in parts):
                    pass  # a fixed fragment (e.g. a column list) inside a constant
                else:
                    problems.append(f"{name}:{node.lineno} interpolates {parts} into SQL")
            elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
                left = node.left
                if isinstance(left, ast.Constant) and SQL_WORDS.search(str(left.value)):
                    problems.append(f"{name}:{node.lineno} %-formats SQL")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                func = node.func
                if (
                    func.attr == "format"
                    and isinstance(func.value, ast.Constant)
                    and SQL_WORDS.search(str(func.value.value))
                ):
                    problems.append(f"{name}:{node.lineno} .format()s SQL")
                if func.attr == "executescript":
                    problems.append(f"{name}:{node.lineno} uses executescript")
                if func.attr in EXECUTORS and node.args:
                    statement = node.args[0]
                    if isinstance(statement, (ast.BinOp, ast.Call)) and not _concat_of_constants(
                        statement
                    ):
                        problems.append(
                            f"{name}:{node.lineno} builds SQL inline: {ast.unparse(statement)}"
                        )
    assert problems == []
    assert seen_allowed == ALLOWED_INTERPOLATIONS, "the allowlist names code that is gone"


def _concat_of_constants(node: ast.AST) -> bool:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _concat_of_constants(node.left) and _concat_of_constants(node.right)
    return isinstance(node, (ast.Constant, ast.Attribute, ast.Name))


def test_status_filters_are_built_from_fixed_fragments_only() -> None:
    """``_filters`` (the one dynamic WHERE clause) only ever appends literal clauses; its
    values, meta-key JSON paths included, go to the parameter list."""
    path = REPO / "stem_sqlite/sqlite/status_queries.py"
    tree = ast.parse(path.read_text())
    filters = next(
        n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "_filters"
    )
    clause_parts: list[ast.AST] = []
    for node in ast.walk(filters):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "clauses" for t in node.targets
        ):
            assert isinstance(node.value, ast.List)
            clause_parts.extend(node.value.elts)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "clauses"
        ):
            assert node.func.attr == "append", ast.unparse(node)
            clause_parts.extend(node.args)
    assert len(clause_parts) >= 5
    for part in clause_parts:
        assert isinstance(part, ast.Constant) and isinstance(part.value, str), ast.unparse(part)
        assert part.value.count("?") >= 1 or "'$'" in part.value, part.value


def test_interpolated_pragma_values_are_checked_first(tmp_path: Path) -> None:
    path = tmp_path / "broker.sqlite"
    for bad in ("NORMAL; DROP TABLE stem_jobs", "OFF", "normal --"):
        with pytest.raises(ConfigurationError):
            SqliteBroker.open(path, synchronous=bad)
        assert not path.exists(), "a refused option created the file"


EVIL = [
    "x'; DROP TABLE stem_jobs; --",
    'q"); DELETE FROM stem_jobs WHERE 1=1; --',
    "a' OR '1'='1",
    "%s %d {0} ? :ns",
    "\\'; SELECT sqlite_version(); --",
]


def test_sql_in_names_round_trips_as_data(tmp_path: Path) -> None:
    """Queue names, task names, ids, reasons and meta keys full of SQL are stored and
    matched as data: every query finds exactly them, and no other row or table moves."""
    broker = SqliteBroker.open(tmp_path / "broker.sqlite", sweeper_interval=0)
    backend = SqliteResultBackend.open(tmp_path / "backend.sqlite", cleanup_interval=0)
    try:
        bystander = Envelope("plain.task", args=[0])
        broker.publish(bystander)
        envelopes = [
            Envelope(name, args=[name], kwargs={name: name}, id=f"id-{name}", queue=f"q-{name}")
            for name in EVIL
        ]
        for envelope in envelopes:
            broker.publish(envelope)
        assert broker.queues() == sorted(["default", *(f"q-{n}" for n in EVIL)])
        for envelope in envelopes:
            queue = envelope.queue
            assert broker.pending_count(queue) == 1
            with broker.consume(queue) as consumer:
                delivery = consumer.receive(timeout=0)
            assert delivery is not None and delivery.envelope.to_dict() == envelope.to_dict()
            assert broker.dead_letter(delivery, reason=envelope.name, meta={envelope.name: 1})
            entry = broker.get_dead_letter(queue, envelope.id)
            assert entry is not None and entry.reason == envelope.name
            assert entry.meta == {envelope.name: 1}
            assert broker.replay_dead_letters(queue).count == 1
            assert broker.purge(queue) == 1
            assert broker.pending_count(queue) == 0

            backend.set(
                envelope.id,
                TaskState.SUCCEEDED,
                payload=envelope.name,
                meta={"queue": queue, envelope.name: envelope.name, 'k"\\': 1},
            )
            status = backend.get(envelope.id)
            assert status is not None and status.payload == envelope.name
            page = backend.list_task_statuses(queue=queue)
            assert [item.status.id for item in page.items] == [envelope.id]
            assert backend.count_task_statuses(queue=queue) == 1
            by_meta = backend.list_task_statuses(meta={envelope.name: envelope.name})
            assert [item.status.id for item in by_meta.items] == [envelope.id], (
                f"the meta filter on the key {envelope.name!r} did not find its record"
            )
            by_odd_key = backend.list_task_statuses(meta={'k"\\': 1}, limit=100)
            assert envelope.id in [item.status.id for item in by_odd_key.items], (
                "the meta filter on the key 'k\"\\' did not find its record"
            )
            with pytest.raises(InvalidArgument):
                backend.list_task_statuses(state=envelope.name)
        assert broker.pending_count("default") == 1  # the bystander is untouched
        assert backend.count_task_statuses() == len(EVIL)
    finally:
        broker.close()
        backend.close()
    for name, expected in (
        ("broker.sqlite", {"stem_jobs", "stem_dead_letters"}),
        ("backend.sqlite", {"stem_task_results", "stem_groups", "stem_worker_heartbeats"}),
    ):
        conn = sqlite3.connect(tmp_path / name)
        try:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            conn.close()
        assert expected <= tables, tables


# -- file permissions ----------

# argv: folder, umask (octal). Opens both engines there, writes to both, prints what
# happened (and the mode of every file in the folder) as JSON.
MODES_CHILD = r"""
import json, os, sys
os.umask(int(sys.argv[2], 8))
from stem_sqlite import Envelope, SqliteBroker, SqliteResultBackend, StemError

folder = sys.argv[1]

def modes():
    return {n: os.stat(os.path.join(folder, n)).st_mode & 0o777 for n in sorted(os.listdir(folder))}

try:
    broker = SqliteBroker.open(os.path.join(folder, "broker.sqlite"), sweeper_interval=0)
    broker.publish(Envelope("x"))
    backend = SqliteResultBackend.open(os.path.join(folder, "backend.sqlite"), cleanup_interval=0)
    backend.set("t", "succeeded", payload=1)
    seen = modes()  # while open, so that the -wal and -shm files exist
    broker.close()
    backend.close()
    print(json.dumps({"ok": True, "modes": seen}))
except StemError as exc:
    print(json.dumps({"ok": False, "error": type(exc).__name__, "message": str(exc),
                      "modes": modes()}))
"""

NOBODY = 65534  # the usual uid of nobody


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder anyone may write (for a run as another user); under /tmp, not tmp_path,
    whose parents only root may enter."""
    folder = Path(tempfile.mkdtemp(prefix="stem-modes-", dir="/tmp"))
    folder.chmod(0o777)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def run_modes(folder: Path, umask: str, *, as_nobody: bool) -> dict[str, Any]:
    prefix = AS_NOBODY if as_nobody else []
    done = subprocess.run(
        [*prefix, sys.executable, "-c", MODES_CHILD, str(folder), umask],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def users() -> list[bool]:
    """Run as this user, and also as an unprivileged one when this is root (root may
    write a file whatever its mode, so only another user shows a refusal)."""
    return [False, True] if os.geteuid() == 0 else [False]


def skip_unless_nobody_works(as_nobody: bool) -> None:
    if not as_nobody:
        return
    try:
        probe = subprocess.run(
            [*AS_NOBODY, sys.executable, "-c", "import stem_sqlite"],
            capture_output=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            timeout=60,
        )
    except OSError as exc:
        pytest.skip(f"cannot run a process as nobody here: {exc}")
    if probe.returncode != 0:
        pytest.skip(f"cannot run stem_sqlite as nobody here: {probe.stderr[-200:]!r}")


@pytest.mark.parametrize("as_nobody", users(), ids=lambda n: "nobody" if n else "me")
@pytest.mark.parametrize("umask", ["022", "077"])
def test_database_files_are_created_owner_only(
    open_folder: Path, umask: str, as_nobody: bool
) -> None:
    skip_unless_nobody_works(as_nobody)
    report = run_modes(open_folder, umask, as_nobody=as_nobody)
    assert report["ok"], report
    names = {
        f"{base}.sqlite{suffix}"
        for base in ("broker", "backend")
        for suffix in ("", "-wal", "-shm")
    }
    assert set(report["modes"]) == names
    assert {name: oct(mode) for name, mode in report["modes"].items()} == dict.fromkeys(
        sorted(names), "0o600"
    )


@pytest.mark.parametrize("as_nobody", users(), ids=lambda n: "nobody" if n else "me")
def test_a_stricter_umask_is_respected_or_refused_cleanly(
    open_folder: Path, as_nobody: bool
) -> None:
    """umask 0277 leaves the owner only read access. The files must never be more open
    than that (0400); where the user cannot write such a file, opening must refuse with
    a StorageError naming the file, and leave nothing behind: the next start, with a
    usual umask, must work."""
    skip_unless_nobody_works(as_nobody)
    report = run_modes(open_folder, "277", as_nobody=as_nobody)
    if report["ok"]:
        assert report["modes"] and all(m == 0o400 for m in report["modes"].values()), report
        return
    assert report["error"] == "StorageError", report
    assert str(open_folder / "broker.sqlite") in report["message"], report
    again = run_modes(open_folder, "022", as_nobody=as_nobody)
    assert again["ok"], (
        f"after the refusal ({report['message']}) the files it left behind "
        f"({ {n: oct(m) for n, m in report['modes'].items()} }) make a later start with "
        f"umask 022 fail too: {again.get('message')}"
    )


# -- a job row cannot choose the code that runs ----------


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_job_names_cannot_import_or_run_unregistered_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pool: str
) -> None:
    modules = tmp_path / "modules"
    modules.mkdir()
    import_marker = tmp_path / "imported"
    module_name = f"stem_side_effect_{os.getpid()}_{pool}"
    (modules / f"{module_name}.py").write_text(
        f"open({str(import_marker)!r}, 'w').write('imported')\n"
        "def run(*args, **kwargs):\n"
        f"    open({str(import_marker)!r}, 'w').write('ran')\n"
    )
    monkeypatch.syspath_prepend(str(modules))
    run_marker = tmp_path / "ran"
    helper_marker = tmp_path / "helper-ran"
    strangers = {
        "os.system": [f"touch {run_marker}"],
        "subprocess.call": [["touch", str(run_marker)]],
        "builtins.eval": [f"open({str(run_marker)!r}, 'w')"],
        "builtins.exec": [f"open({str(run_marker)!r}, 'w')"],
        "stem_sqlite.builtins.sleep": [5],  # the module path of the registered stem.sleep
        "tests.reliability.fault_helpers.write_marker": [str(helper_marker)],
        module_name: [],
        f"{module_name}.run": [],
        f"{module_name}:run": [],
        "__import__": [module_name],
    }
    broker = SqliteBroker.open(tmp_path / "broker.sqlite", poll_interval=0.02, sweeper_interval=0)
    backend = SqliteResultBackend.open(tmp_path / "backend.sqlite", poll_interval=0.02)
    app = Stem(broker=broker, backend=backend)
    app.task(name="sec.echo")(fault_helpers.echo_value)
    try:
        ids = {}
        for name, args in strangers.items():
            envelope = Envelope(name, args=args)
            broker.publish(envelope)
            ids[name] = envelope.id
        after = app.tasks["sec.echo"].delay("after")
        run_burst(app, pool=pool, concurrency=1, timeout=60)

        assert after.get(timeout=5) == "after"  # the worker went on
        for name, job_id in ids.items():
            entry = broker.get_dead_letter("default", job_id)
            assert entry is not None, f"{name} was not dead-lettered"
            assert entry.reason == "unregistered-task", (name, entry.reason)
            status = backend.get(job_id)
            assert status is not None and status.state is TaskState.FAILED, name
            assert status.error is not None and status.error.type == "TaskNotRegistered"
    finally:
        broker.close()
        backend.close()
    assert not import_marker.exists(), "a job name made the worker import a module"
    assert not run_marker.exists(), "a job name made the worker run a command"
    assert not helper_marker.exists(), "a job name made the worker run an unregistered function"
    assert module_name not in sys.modules
