"""Why a run recipe (configs/NAME.py, as `train.py --config PATH[:ARG]` takes it) cannot be
loaded: one line naming the file, the line and the error, for train.py's exit 2."""

from __future__ import annotations

import importlib.util
import os
import traceback

import ml_collections

_EXAMPLE = "see configs/gpt_tiny.py"


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


def _line_in(path: str, e: BaseException) -> int | None:
    """The line of `path` where `e` was raised or passed through (the innermost such frame)."""
    lines = [
        frame.lineno
        for frame in traceback.extract_tb(e.__traceback__)
        if os.path.abspath(frame.filename) == os.path.abspath(path)
    ]
    return lines[-1] if lines else None


def _where(path: str, e: BaseException, stage: str) -> str:
    line = _line_in(path, e)
    return f"{path}, line {line} ({stage})" if line is not None else f"{path} ({stage})"


def load_problem(spec: str) -> str | None:
    """None if the recipe `spec` ("PATH" or "PATH:ARG") loads and its get_config([ARG])
    returns a ConfigDict; else one line: the file, the line and the error, or what is missing.
    Runs the recipe's code (recipes are plain Python with no side effects)."""
    path, *args = spec.split(":", 1)
    if not os.path.isfile(path):
        what = "is a directory" if os.path.isdir(path) else "does not exist"
        return f"{path!r} {what}; give a recipe file ({_EXAMPLE})"
    module_spec = importlib.util.spec_from_file_location("recipe_under_check", path)
    if module_spec is None or module_spec.loader is None:
        return f"{path!r} is not a Python file; give a recipe file ({_EXAMPLE})"
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as e:  # IndentationError, TabError included
        where = f"{e.filename or path}, line {e.lineno}"
        if e.filename and os.path.abspath(e.filename) != os.path.abspath(path):
            where += f" (imported by {path})"
        return f"{where}: {type(e).__name__}: {e.msg}"
    except Exception as e:  # noqa: BLE001 - whatever the recipe raises is the answer
        return f"{_where(path, e, 'at import')}: {_first_line(e)}"
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        return (
            f"{path} defines no get_config() function; a recipe returns its "
            f"ml_collections.ConfigDict from get_config() ({_EXAMPLE})"
        )
    try:
        config = get_config(*args)
    except Exception as e:  # noqa: BLE001
        return f"{_where(path, e, 'in get_config()')}: {_first_line(e)}"
    if not isinstance(config, ml_collections.ConfigDict):
        return (
            f"{path}: get_config() returned {type(config).__name__}, not an "
            f"ml_collections.ConfigDict ({_EXAMPLE})"
        )
    return None
