"""--app as a .py file and as a module found through STEM_PATH (issue 4 item 1)."""

from __future__ import annotations

from tests.cli.conftest import Cli

FILE_APP = """\
from helper import twice  # a module next to the file: its folder is on sys.path

from stem_sqlite import Stem

app = Stem()


@app.task(name="files.double", queue="files")
def double(x):
    return twice(x)
"""

MODULE_APP = """\
from stem_sqlite import Stem

application = Stem()  # not named `app`: the only Stem instance of the module


@application.task(name="lib.greet", queue="greetings")
def greet(name, punctuation="!"):
    return f"hello {name}{punctuation}"
"""


def test_worker_runs_an_app_given_as_a_py_file(cli: Cli) -> None:
    cli.write("apps/helper.py", "def twice(x):\n    return 2 * x\n")
    cli.write_app("apps/tasks.py", FILE_APP)
    task_id = cli.enqueue("files.double", "21", "--app", "apps/tasks.py")
    assert cli.queues()["files"]["pending"] == 1  # the task's own queue
    log = cli.burst("--app", "apps/tasks.py")  # no -Q: the queues of the app's tasks
    assert "queues=files" in log and "files.double" in log
    status = cli.status(task_id)
    assert status is not None
    assert (status["state"], status["result"]) == ("succeeded", 42)


def test_worker_runs_an_app_module_found_through_stem_path(cli: Cli) -> None:
    cli.write("lib/greetings_app.py", MODULE_APP)
    env = {"STEM_PATH": "lib"}
    task_id = cli.enqueue("lib.greet", "ann", "punctuation=?", "--app", "greetings_app", env=env)
    other = cli.enqueue("lib.greet", "bob", "--app", "greetings_app:application", env=env)
    # Without STEM_PATH the module cannot be found.
    done = cli.run("stem-enqueue", "lib.greet", "x", "--app", "greetings_app")
    assert done.returncode == 2 and "greetings_app" in done.stderr
    proc = cli.worker(env={**env, "STEM_APP": "greetings_app", "WORKER_NAME": "greeter"})
    first = cli.wait_state(task_id, "succeeded")
    second = cli.wait_state(other, "succeeded")
    assert cli.stop(proc) == 0
    assert first["result"] == "hello ann?" and second["result"] == "hello bob!"
    assert first["meta"]["worker"] == "greeter"
    assert "queues=greetings" in cli.log()
