"""Files tnops and its trainer write and read: atomic writes and pickle-free loading.

* :func:`atomic_write` (and :func:`atomic_save` for ``torch.save``, :func:`atomic_write_text`) writes
  to a temporary file beside the target, flushes and fsyncs it, renames it over the target and fsyncs
  the folder: a crash or power loss leaves either the old file or the new one, never half of one.
  The temporary file is named ``.NAME.tmp-PID-RANDOM``; :func:`remove_stale_temporaries` deletes
  those that a process no longer running left behind (a run killed mid-write).
* :func:`load_file` reads a ``torch.save`` file with ``weights_only=True``, so a file that would
  import or call anything (a crafted pickle can run any code) is refused; a corrupt, truncated or
  foreign file becomes a ValueError naming the path, not a raw unpickling error.
* :func:`read_utf8_text` reads text strictly: bytes that are not UTF-8 (a binary file) are refused
  with a ValueError naming the file, byte offset and line, instead of being decoded into replacement characters.
* A write that fails (read-only folder, full disk, a path through a regular file) is an ``OSError`` whose
  message names the file being written and the reason, with the original ``errno``; torch's zip writer, which
  turns the file's own ``OSError`` into a ``RuntimeError`` ("unexpected pos", "PytorchStreamWriter failed
  writing file"), is mapped back to that ``OSError``. :func:`prepare_output_directory` checks a run's output
  folder before any work is done.
"""
from __future__ import annotations

import errno
import os
import re
import tempfile
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_save", "atomic_write", "atomic_write_text", "fsync_directory", "load_file",
           "prepare_output_directory", "read_utf8_text", "remove_stale_temporaries", "require_keys"]

_TEMPORARY_SUFFIX = re.compile(r"(\d+)(?:-[0-9a-f]+)?")  # after ".NAME.tmp-": PID, then (new format) a random tag


def _prefix(argument: str | None) -> str:
    return f"{argument}: " if argument else ""


def _check_target(path: Path, what: str, argument: str | None) -> None:
    if path.is_dir():
        raise ValueError(f"{_prefix(argument)}{path} is a directory; expected the path of a {what} file "
                         f"(e.g. {path / 'NAME.pt'})")


def fsync_directory(directory) -> None:
    """Make a rename inside ``directory`` durable (POSIX; a no-op where folders cannot be opened)."""
    if os.name == "nt":
        return
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not fsync folders; the rename itself is still atomic
        pass
    finally:
        os.close(fd)


def _file_in_the_way(directory: Path) -> Path | None:
    """``directory`` or the nearest of its parents that exists as something other than a folder, else None."""
    for folder in (directory, *directory.parents):
        if folder.exists():
            return None if folder.is_dir() else folder
    return None


def _write_error(error: OSError, path: Path, what: str, argument: str | None, *ignored) -> OSError:
    """``error`` restated as "cannot write the WHAT file PATH: REASON" (same errno, so the same OSError subclass)."""
    reason = error.strerror or str(error) or type(error).__name__
    named = error.filename
    blocking = _file_in_the_way(path.parent)
    if blocking is not None:
        reason = f"{blocking} is a regular file, not a folder"
    elif named is not None and os.fspath(named) not in {os.fspath(p) for p in (path, *ignored)}:
        reason = f"{reason} ({os.fspath(named)})"
    message = f"{_prefix(argument)}cannot write the {what} file {os.fspath(path)}: {reason}"
    return OSError(error.errno, message) if error.errno is not None else OSError(message)


def atomic_write(path, write: Callable[[BinaryIO], None], *, what: str = "output",
                 argument: str | None = None) -> Path:
    """Write ``path`` atomically: ``write(f)`` into ``.NAME.tmp-PID-RANDOM`` beside it, fsync, rename, fsync folder.

    Creates missing parent folders and first removes stale temporaries of ``path``
    (:func:`remove_stale_temporaries`). On any error the temporary file is removed and ``path`` is untouched.

    Raises:
        ValueError: ``path`` is an existing directory (message prefixed with ``argument:`` when given).
        OSError: the folder or file cannot be written (read-only, full disk, a parent that is a file): the
            message names ``path`` and the reason; ``errno`` is the original one.
    """
    path = Path(path)
    _check_target(path, what, argument)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        try:
            with open(tmp, "xb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as error:
        raise _write_error(error, path, what, argument, tmp) from None
    fsync_directory(path.parent)
    return path


class _WriteRecorder:
    """A file proxy that remembers the first ``OSError`` of ``write``: torch's zip writer replaces it with a
    RuntimeError ("unexpected pos ..."), which says nothing of a full disk."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self._handle.write(data)
        except OSError as error:
            self.error = self.error or error
            raise

    def __getattr__(self, name):
        return getattr(self._handle, name)


_TORCH_WRITER_FAILURES = ("unexpected pos", "PytorchStreamWriter failed", "file write failed")


def _torch_save(obj, handle: BinaryIO) -> None:
    import torch

    recorder = _WriteRecorder(handle)
    try:
        torch.save(obj, recorder)
    except RuntimeError as error:
        if recorder.error is not None:
            raise recorder.error from None
        text = str(error)
        if any(failure in text for failure in _TORCH_WRITER_FAILURES):
            raise OSError(errno.EIO, f"torch.save could not write the file ({text.splitlines()[0][:200]})") from None
        raise


def atomic_save(obj, path, *, what: str = "checkpoint", argument: str | None = None) -> Path:
    """``torch.save(obj)`` to ``path`` through :func:`atomic_write` (a failed write is an OSError, see there)."""
    return atomic_write(path, lambda handle: _torch_save(obj, handle), what=what, argument=argument)


def prepare_output_directory(directory, *, argument: str | None = None) -> Path:
    """Create ``directory`` (and its parents) if missing and check that files can be created in it.

    Call it before long work whose results go there, so that a wrong folder fails at once.

    Raises:
        ValueError: ``directory`` (or one of its parents) is a regular file.
        OSError: the folder cannot be created or written (read-only, full disk); the message names it.
    """
    directory = Path(directory)
    blocking = _file_in_the_way(directory)
    if blocking is not None:
        where = "" if blocking == directory else f" cannot be created: {blocking}"
        raise ValueError(f"{_prefix(argument)}{os.fspath(directory)}{where} is a regular file, not a folder; "
                         "give a folder path (created when missing)")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=directory)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        message = f"{_prefix(argument)}cannot write into the folder {os.fspath(directory)}: {reason}"
        raise (OSError(error.errno, message) if error.errno is not None else OSError(message)) from None
    return directory


def atomic_write_text(text: str, path, *, what: str = "text") -> Path:
    """UTF-8 ``text`` to ``path`` through :func:`atomic_write`."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")), what=what)


def _running(pid: int) -> bool:
    if os.name == "nt":  # no cheap liveness test: keep the file
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(path) -> list[Path]:
    """Delete the ``.NAME.tmp-PID[-RANDOM]`` files beside ``path`` whose writer is gone; returns them.

    A temporary file is stale when its PID is not a running process on this machine, or is this
    process's own PID (containers reuse PIDs across restarts; this process is not writing ``path`` while
    it calls this). On a folder shared between machines, call it only where the writer runs.
    """
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    prefix = f".{path.name}.tmp-"
    for candidate in path.parent.iterdir():
        if not candidate.name.startswith(prefix):
            continue
        match = _TEMPORARY_SUFFIX.fullmatch(candidate.name[len(prefix):])
        if match is None or not candidate.is_file():
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or not _running(pid):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def _reason(error: BaseException) -> str:
    text = str(error).strip()
    if "weights only load failed" in text.lower() or "weightsunpickler" in text.lower():
        # torch's own advice (load with weights_only=False) is exactly what must not be done with such a file
        found = re.search(r"GLOBAL\s+([\w.]+)", text)
        named = f" (it would import {found.group(1)})" if found else ""
        return (f"it holds objects other than tensors and plain values{named}; such files are not loaded, "
                "because unpickling them can run arbitrary code")
    if isinstance(error, EOFError):
        return "the file is empty or truncated (EOFError)"
    first = text.split("\n", 1)[0].split(". ", 1)[0].rstrip(".")
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def load_file(path, *, what: str = "tnops checkpoint", argument: str | None = None, map_location="cpu"):
    """``torch.load(path, weights_only=True)``: tensors, numbers, str, bytes, None, lists, tuples and dicts only.

    Args:
        path: the file.
        what: what the file should be, for messages ("tnops checkpoint", "saved SynonymTable").
        argument: the argument or flag that named the file, prefixed to messages.
        map_location: as for ``torch.load`` (default "cpu").

    Raises:
        FileNotFoundError: no such file.
        ValueError: ``path`` is a directory, or the file is corrupt, truncated, not a torch file, or
            holds anything that would have to be imported or called to be unpickled.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{_prefix(argument)}no such file {os.fspath(path)!r} (expected a {what})")
    if path.is_dir():
        raise ValueError(f"{_prefix(argument)}{path} is a directory, not a {what} file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (OSError, MemoryError):
        raise
    except Exception as error:  # noqa: BLE001  (zip, pickle and EOF errors differ by torch version)
        raise ValueError(f"{_prefix(argument)}{path} is corrupt or is not a {what}: {_reason(error)}") from None


def require_keys(payload, keys: Iterable[str], path, *, what: str = "tnops checkpoint",
                 argument: str | None = None) -> dict:
    """``payload`` if it is a dict holding every key in ``keys``; else a ValueError naming the file and the keys."""
    if not isinstance(payload, dict):
        raise ValueError(  # noqa: TRY004  (the file's content is wrong, not the caller's argument type)
            f"{_prefix(argument)}{path} is not a {what}: it holds a {type(payload).__name__}, not a dict")
    missing = [key for key in keys if key not in payload]
    if missing:
        raise ValueError(f"{_prefix(argument)}{path} is not a complete {what}: missing key(s) "
                         f"{', '.join(repr(key) for key in missing)}")
    return payload


def read_utf8_text(path, *, what: str = "text file", argument: str | None = None) -> str:
    """The contents of ``path`` decoded as strict UTF-8 (a leading BOM is kept, as ``read_text`` would).

    Raises:
        ValueError: the bytes are not valid UTF-8, or hold NUL bytes (a binary file, or UTF-16/32 text);
            the message names the file, the offset of the first offending byte and its line.
    """
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ValueError(f"{_prefix(argument)}{what} {os.fspath(path)!r} is not UTF-8 text: byte {error.start} "
                         f"(line {line}, {data[error.start:error.start + 1]!r}) {error.reason}; convert it to UTF-8 "
                         "or leave it out") from None
    if "\x00" in text:
        offset = data.index(0)
        line = data.count(b"\n", 0, offset) + 1
        raise ValueError(f"{_prefix(argument)}{what} {os.fspath(path)!r} is not text: it holds a NUL byte at "
                         f"offset {offset} (line {line}; a binary file, or UTF-16/UTF-32 "
                         "text); leave it out or convert it to UTF-8")
    return text
