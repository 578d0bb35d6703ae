"""Loading the user's app from ``--app``: a module path, a ``.py`` file, ``module:attr``."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from pathlib import Path

from stem_sqlite import Stem

from .errors import UsageProblem, fail

FROZEN = bool(getattr(sys, "frozen", False))


def add_stem_path(value: str | None) -> None:
    """Put the folders of ``STEM_PATH`` (``os.pathsep``-separated) first on ``sys.path``."""
    for folder in reversed([part for part in (value or "").split(os.pathsep) if part.strip()]):
        resolved = os.path.abspath(folder)
        if resolved not in sys.path:
            sys.path.insert(0, resolved)


def _import_failure(spec: str, exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):
        where = f"{exc.filename}, line {exc.lineno}" if exc.filename else spec
        return f"the app {spec!r} has a syntax error ({where}: {exc.msg}); fix the file"
    if isinstance(exc, ModuleNotFoundError):
        missing = exc.name or str(exc)
        if FROZEN:
            fix = (
                f"add the folder that holds {missing!r} to STEM_PATH, or rebuild the "
                "bundle with it installed"
            )
        else:
            fix = f"install {missing!r} in this environment, or add its folder to STEM_PATH"
        return f"importing the app {spec!r} failed: no module named {missing!r}; {fix}"
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" ({frame.filename}, line {frame.lineno})" if frame else ""
    return (
        f"importing the app {spec!r} raised {type(exc).__name__}: {exc}{where}; "
        "fix the module (run with --debug for the traceback)"
    )


def load_app(spec: str, *, debug: bool = False) -> Stem:
    """Import ``spec`` and return its ``Stem``: the attribute named after ``:``, else
    ``app``, else the only ``Stem`` instance in the module."""
    text = spec.strip()
    if not text:
        fail("--app is empty; give a module (pkg.tasks) or a file (path/to/tasks.py)")
    target, _, attr = text.partition(":")
    if target.endswith(".py") or os.sep in target or Path(target).suffix == ".py":
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            fail(f"--app file {target!r} does not exist")
        folder = str(path.parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        module_name = path.stem
        try:
            spec_obj = importlib.util.spec_from_file_location(module_name, path)
            assert spec_obj is not None and spec_obj.loader is not None
            module = importlib.util.module_from_spec(spec_obj)
            sys.modules[module_name] = module
            spec_obj.loader.exec_module(module)
        except BaseException as exc:
            sys.modules.pop(module_name, None)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            raise UsageProblem(_import_failure(text, exc)) from exc
    else:
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(target)
        except BaseException as exc:
            if debug or isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            if isinstance(exc, ModuleNotFoundError) and exc.name == target.split(".")[0]:
                fail(
                    f"no module named {target!r} for --app; check the name, the working "
                    "folder, or add its folder to STEM_PATH"
                )
            fail(_import_failure(text, exc))
    if attr:
        found = getattr(module, attr, None)
        if not isinstance(found, Stem):
            fail(f"{target!r} has no Stem app named {attr!r}")
        return found
    if isinstance(getattr(module, "app", None), Stem):
        return module.app  # type: ignore[no-any-return]
    apps = [value for value in vars(module).values() if isinstance(value, Stem)]
    if len(apps) == 1:
        return apps[0]
    if not apps:
        fail(f"{text!r} defines no Stem app; create one with app = Stem()")
    fail(f"{text!r} defines several Stem apps; pick one with {target}:NAME")
