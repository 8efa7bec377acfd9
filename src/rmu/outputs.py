"""Where rmu may write: one rule for every command that writes a folder or a results file.

* An output never overlaps an input: it is not the model folder, does not lie inside it or
  contain it, is not an input corpus or task file and does not contain one (paths are resolved,
  so ``./x`` and ``x`` are the same). This holds with or without ``--overwrite``.
* rmu writes only into a new or empty folder, or into a folder it wrote itself: those carry the
  marker file :data:`MARKER`. Any other non-empty folder is refused, even with ``--overwrite``;
  nothing is guessed from the folder's other files.
* Before any work, the folder is locked (:class:`OutputLock`, an OS-level ``flock`` through
  ``filelock``, released by the OS when the process dies). A second run on the same output fails
  at once, naming the holder.
* An output that cannot be written (under a regular file, in a read-only place) fails before
  anything slow, not after.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import inspect
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from rmu.config import ConfigError

MARKER = ".rmu-output.json"  # inside every folder rmu writes


class OutputError(ConfigError):
    """An output rmu must not or cannot write; the message names it and the fix."""


def resolved(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve()


# -- what an output may be ----------------------------------------------------------------------


def check_place(path: Path, what: str) -> None:
    """Refuse an output below a regular file (it could never be created)."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{what} {path} lies under {parent}, which is a file, not a folder")
            return


def input_paths(*values: Any) -> list[Path]:
    """The existing local paths among ``values`` (strings, paths, lists, dicts' values); others are skipped.

    Hub ids, task names and in-memory models are not paths, so they never overlap an output.
    """
    found: list[Path] = []
    for value in values:
        if isinstance(value, dict):
            found += input_paths(*value.values())
        elif isinstance(value, (list, tuple, set)):
            found += input_paths(*value)
        elif isinstance(value, (str, os.PathLike)):
            text = os.fspath(value)
            try:
                if "=" in text and not Path(text).exists():  # NAME=PATH
                    text = text.split("=", 1)[1]
                if text and Path(text).expanduser().exists():
                    found.append(resolved(text))
            except (OSError, ValueError):  # a text, not a path (too long, NUL bytes)
                pass
    return found


def check_apart(path: Path, inputs: Iterable[Path], what: str, may_lie_inside: Iterable[Path] = ()) -> None:
    """Refuse an output that is an input, lies inside one or contains one.

    ``may_lie_inside``: inputs that are only read as folders of results (``rmu report runs
    --output runs/report``), inside which an output may lie.
    """
    readable = set(may_lie_inside)
    for source in [*inputs, *readable]:
        if path == source:
            raise OutputError(f"{what} {path} is an input of this command; choose a new folder for the output")
        if source in path.parents and source not in readable:
            raise OutputError(f"{what} {path} lies inside the input {source}; choose a folder outside the inputs")
        if path in source.parents:
            raise OutputError(f"{what} {path} contains the input {source}; choose a folder apart from the inputs")


def is_rmu_folder(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def is_empty_folder(folder: Path) -> bool:
    return folder.is_dir() and not any(folder.iterdir())


def check_ours(folder: Path, what: str, overwrite: bool = False) -> None:
    """Refuse a folder rmu may not write into or replace: one that exists, holds files, has no marker."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{what} {folder} is a file; give a folder")
    if folder.exists() and not is_empty_folder(folder) and not is_rmu_folder(folder):
        even = " even with --overwrite" if overwrite else ""
        raise OutputError(
            f"{what} {folder} holds files rmu did not write (it has no {MARKER}); refusing to write there{even}. "
            "Choose a new or empty folder."
        )


def mark(folder: Path, command: str) -> None:
    """Write the marker that says rmu wrote ``folder`` (kept if there)."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / MARKER
    if not marker.is_file():
        from rmu.version import __version__

        write_atomic(marker, json.dumps({"written_by": f"rmu {command}", "rmu_version": __version__,
                                         "created": _now()}, indent=2) + "\n")


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: never half a file."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


# -- the lock ---------------------------------------------------------------------------------------


class OutputLock:
    """An exclusive lock on an output folder, held from before any work until the command ends.

    The lock file lies next to the folder (``.<name>.lock``), not inside it: the folder itself may be
    renamed or replaced while the lock is held. Next to it, ``.<name>.lock.json`` names the holder
    (pid, host, start time, command) for the message a second run prints. Creating the lock file is
    also the early proof that the place is writable.
    """

    def __init__(self, folder: Path, command: str, what: str = "--output"):
        self.folder, self.command, self.what = folder, command, what
        self.path = folder.parent / f".{folder.name}.lock"
        self.info = folder.parent / f".{folder.name}.lock.json"
        self._lock = None

    def acquire(self) -> "OutputLock":
        from filelock import FileLock, Timeout

        try:
            self.folder.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(self.path), timeout=0)
            lock.acquire()
        except Timeout:
            raise OutputError(
                f"{self.what} {self.folder} is in use by another rmu run ({self._holder()}); wait for it to end "
                "or choose another output"
            ) from None
        except OSError as error:
            raise OutputError(f"{self.what} {self.folder} cannot be written: {error.strerror or error} "
                              f"({error.filename or self.folder.parent})") from None
        self._lock = lock
        try:
            write_atomic(self.info, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": _now(),
                                                "command": f"rmu {self.command}"}) + "\n")
        except OSError:
            pass  # the lock holds without the note; a second run then names no holder
        return self

    def _holder(self) -> str:
        # The holder writes its note just after taking the lock: give it a moment to appear.
        for _ in range(40):
            try:
                info = json.loads(self.info.read_text())
                return f"pid {info['pid']} on {info['host']}, started {info['started']}, {info['command']}"
            except FileNotFoundError:
                time.sleep(0.05)
            except (OSError, ValueError, KeyError, TypeError):
                break
        return "holder unknown"

    def release(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                self.info.unlink()
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# -- folders and files ------------------------------------------------------------------------------


def check_folder(output: str | os.PathLike, inputs: Iterable[Path] = (), what: str = "--output",
                 may_lie_inside: Iterable[Path] = ()) -> Path:
    """The checks that need no lock: a folder path, not under a file, apart from the inputs."""
    folder = resolved(output)
    check_place(folder, what)
    check_apart(folder, inputs, what, may_lie_inside)
    return folder


@contextlib.contextmanager
def claim_folder(output: str | os.PathLike, command: str, inputs: Iterable[Path] = (),
                 what: str = "--output", may_lie_inside: Iterable[Path] = (), overwrite: bool = False) -> Iterator[Path]:
    """Check, lock and mark an output folder for the duration of a command; yields its resolved path."""
    folder = check_folder(output, inputs, what, may_lie_inside)
    check_ours(folder, what, overwrite)  # refused without leaving a lock file behind
    with OutputLock(folder, command, what):
        check_ours(folder, what, overwrite)  # again: another run may have written it meanwhile
        try:
            mark(folder, command)
        except OSError as error:
            raise OutputError(f"{what} {folder} cannot be written: {error.strerror or error}") from None
        yield folder


def writes_folder(command: str, inputs: Callable[[dict], list] | tuple[str, ...] = (),
                  result_folders: tuple[str, ...] = (), output: str = "output"):
    """Decorate a function whose ``output`` argument is a folder it writes (None: writes nothing).

    ``inputs``: the names of the arguments holding input paths, or a function of the bound
    arguments returning them; ``result_folders``: arguments naming folders of results it only
    reads, inside which the output may lie. The folder is checked, locked and marked before the
    function runs.
    """
    def decorate(function):
        signature = inspect.signature(function)

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = bound.arguments
            if arguments.get(output) is None:
                return function(*args, **kwargs)
            sources = inputs(arguments) if callable(inputs) else [arguments.get(name) for name in inputs]
            readable = input_paths(*[arguments.get(name) for name in result_folders])
            with claim_folder(arguments[output], command, input_paths(*sources), may_lie_inside=readable,
                              overwrite=bool(arguments.get("overwrite"))):
                return function(*args, **kwargs)

        return wrapper

    return decorate


def check_file(output: str | os.PathLike, inputs: Iterable[Path] = (), written_by: str = "",
               what: str = "--output") -> Path:
    """Refuse, before any work, a results file that cannot or must not be written.

    Not under a file, not a folder, not an input nor inside an input folder; an existing file is
    replaced only when rmu wrote it (a JSON object whose ``written_by`` is ``written_by``); the
    folder must accept a new file (tried with a temporary one).
    """
    path = resolved(output)
    check_place(path, what)
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; give a file name")
    for source in inputs:
        if path == source or source in path.parents:
            raise OutputError(f"{what} {path} is or lies inside the input {source}; write the results elsewhere")
    if path.exists() and _written_by(path) != written_by:
        raise OutputError(f"{what} {path} exists and is not a results file rmu wrote; refusing to replace it. "
                          "Choose a new file name.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as error:
        raise OutputError(f"{what} {path} cannot be written: {error.strerror or error}") from None
    return path


def _written_by(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("written_by") if isinstance(data, dict) else None
