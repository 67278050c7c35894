"""A lock on a model folder while a run trains into it, so that two runs never mix in one folder.

The lock is an OS-level lock (``fcntl.flock``) on ``<folder>/.pairless.lock``, a small JSON file that
names the holder: pid, host, start time and command line.  The kernel drops the lock when the
holding process ends in any way (exit, exception, SIGKILL, power cut), so a crashed run never
blocks the next one; the file it leaves behind is stale and is simply taken over.  Where the file
system does not enforce ``flock`` between processes, a holder that names a live process on this
host (same pid *and* same process start time, so a reused pid is not mistaken for it) still
counts as running.

A run takes the lock with :func:`acquire` (a second run into the same folder stops with one line
naming the first) and gives it back with :func:`release`; :func:`holder` tells a reader (say,
``pairless denoise`` on a folder being trained) whether a run holds it, without disturbing that run.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pairless.errors import PairlessError
from pairless.io.processes import alive, start_ticks

LOCK_FILE = ".pairless.lock"

# folder (resolved) -> open file descriptor holding the lock, for the locks this process holds
_HELD: dict[Path, int] = {}
# a forked child is another run: it holds none of its parent's locks (the parent still does)
os.register_at_fork(after_in_child=_HELD.clear)


@dataclass(frozen=True)
class Holder:
    """Who holds a model folder's lock, as written in its lock file."""

    pid: int | None
    host: str | None
    started: float | None
    command: str | None

    def describe(self) -> str:
        if self.pid is None:
            return "another run (it has not written its name yet)"
        when = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
            if self.started
            else "an unknown time"
        )
        command = f": `{self.command}`" if self.command else ""
        return f"pid {self.pid} on {self.host}, started {when}{command}"


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _holder(info: dict) -> Holder:
    return Holder(info.get("pid"), info.get("host"), info.get("started"), info.get("command"))


def _live_elsewhere(info: dict) -> bool:
    """Whether the lock file names a live process on this host other than us (flock not enforced here)."""
    pid = info.get("pid")
    if not isinstance(pid, int) or info.get("host") != socket.gethostname() or pid == os.getpid():
        return False
    return alive(pid, info.get("ticks"))


def acquire(folder: str | os.PathLike, *, what: str = "train into") -> None:
    """Take the lock on ``folder`` (created if missing) for this process, or raise a one-line PairlessError.

    Taking a lock this process already holds does nothing.  A lock another live run holds is
    refused with a message naming that run; a stale one (its process is gone) is taken over.
    """
    from pairless.io.files import WRITE_ERRNOS, file_mode, make_folder, write_error

    folder = make_folder(folder)
    key = folder.resolve()
    if key in _HELD:
        return
    path = folder / LOCK_FILE
    for attempt in range(20):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, file_mode())
        except OSError as err:
            if err.errno in WRITE_ERRNOS:
                raise write_error(err, path) from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if attempt < 4:  # a reader's probe holds a shared lock for microseconds
                time.sleep(0.05)
                continue
            raise PairlessError(
                f"{folder} is in use by {_holder(_read(path)).describe()}; wait for that run to finish "
                "or stop it, or choose another --out"
            ) from None
        # the file may have been unlinked by a releasing holder between our open and our flock
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        info = _read(path)
        if _live_elsewhere(info):
            os.close(fd)
            raise PairlessError(
                f"{folder} is in use by {_holder(info).describe()}; wait for that run to finish or stop it, "
                f"or choose another --out (if it is not running, delete {path})"
            )
        # a run training into the folder around this one, or into one inside it (ISCL and the supervised
        # baselines train into MODEL/training), uses this folder too
        for other_folder in (folder.parent, *(c for c in sorted(folder.iterdir()) if c.is_dir())):
            other = holder(other_folder)
            if other is not None:
                path.unlink(missing_ok=True)  # ours while we hold it: stale or just created
                os.close(fd)
                raise PairlessError(
                    f"{folder} is in use by {other.describe()} (training into {other_folder}); wait for that"
                    " run to finish or stop it, or choose another --out"
                )
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "ticks": start_ticks(os.getpid()),
            "command": _command(),
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
        except OSError as err:
            os.close(fd)
            if err.errno in WRITE_ERRNOS:
                raise write_error(err, path) from None
            raise
        _HELD[key] = fd
        return
    raise PairlessError(f"could not take the lock {path} (it keeps changing); try again")  # pragma: no cover


def _command() -> str | None:
    """This process's command line, shortened: ``pairless fit n2v ...`` (``python -m pairless ...``)."""
    if not sys.argv or not sys.argv[0]:
        return None
    script = Path(sys.argv[0])
    program = f"python -m {script.parent.name}" if script.name == "__main__.py" else script.name
    return " ".join([program, *sys.argv[1:]])


def release(folder: str | os.PathLike) -> None:
    """Give back this process's lock on ``folder`` (and delete its lock file); nothing if it holds none."""
    key = Path(folder).resolve()
    fd = _HELD.pop(key, None)
    if fd is None:
        return
    try:
        (key / LOCK_FILE).unlink(
            missing_ok=True
        )  # while still locked, so no one takes a file about to vanish
    except OSError:
        pass
    os.close(fd)


def release_within(folder: str | os.PathLike) -> None:
    """Give back every lock this process holds on ``folder`` or a folder inside it."""
    root = Path(folder).resolve()
    for key in [k for k in _HELD if k == root or root in k.parents]:
        release(key)


def holds(folder: str | os.PathLike) -> bool:
    """Whether this process holds the lock on ``folder``."""
    return Path(folder).resolve() in _HELD


def holder(folder: str | os.PathLike) -> Holder | None:
    """The run holding ``folder``'s lock, or ``None`` when no live run (or only this process) holds it.

    The probe takes a shared lock for an instant and never blocks; a run starting at that instant
    retries, so it is not refused because of it.
    """
    folder = Path(folder)
    path = folder / LOCK_FILE
    if holds(folder) or not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return _holder(_read(path))
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        info = _read(path)
        return _holder(info) if _live_elsewhere(info) else None
    finally:
        os.close(fd)


def training_holder(folder: str | os.PathLike) -> Holder | None:
    """The run training into model folder ``folder``: its lock, or that of a training folder inside it."""
    folder = Path(folder)
    found = holder(folder)
    if found is not None or not folder.is_dir():
        return found
    for child in sorted(folder.iterdir()):
        if child.is_dir() and (child / LOCK_FILE).is_file():
            found = holder(child)
            if found is not None:
                return found
    return None
