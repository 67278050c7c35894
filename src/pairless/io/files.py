"""Writing files so that nothing is ever half-written, overwritten by accident or left unreadable to others.

Every file pairless writes goes through :func:`atomic_path`, :func:`write_bytes` or :func:`atomic_folder`:
the data goes to a temporary file beside the target, which is flushed to disk and renamed onto the
target only when it is complete, so a failed or killed write (even SIGKILL) never leaves a truncated
file under the target's name.  The file gets the permissions an ordinary new file gets (``0666``
less the umask), not the private ``0600`` of :func:`tempfile.mkstemp`; folders made with
:func:`make_folder` likewise get ``0777`` less the umask.

Within a :func:`guarded_run` (every command sets one up) these writers also enforce what pairless may
replace: never an input of the run, and nothing in the run's outputs that existed before it, unless the
user said ``--overwrite`` (:func:`check_replace`).

A full disk or an unwritable target is raised as :class:`WriteError`, a :class:`PairlessError`
whose one line names the path, the space the write needs and what is free, and the fix.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pairless.errors import PairlessError

# errno values that mean "this target cannot be written here", as opposed to a bug or a missing input
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_DENIED = {errno.EACCES, errno.EPERM}
_READ_ONLY = {errno.EROFS}
WRITE_ERRNOS = _FULL | _DENIED | _READ_ONLY
_CHUNK = 1 << 20


class WriteError(PairlessError):
    """A target that cannot be written: a full disk or quota, no permission, a read-only file system."""

    def __init__(self, message: str, *, path: Path, errno_: int | None = None):
        super().__init__(message)
        self.path = path
        self.errno = errno_


def umask() -> int:
    """The process umask, read without changing it where the system tells it (Linux), else set back."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode an ordinary new file gets: ``0666`` less the umask."""
    return 0o666 & ~umask()


def folder_mode() -> int:
    """The mode an ordinary new folder gets: ``0777`` less the umask."""
    return 0o777 & ~umask()


def human(nbytes: float) -> str:
    """``1.5 MB``-style sizes for messages (powers of 1000, as ``df -H``)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(nbytes) < 1000 or unit == "TB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return f"{nbytes:.1f} TB"  # pragma: no cover


def _mount_point(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists():
        path = path.parent
    while not os.path.ismount(path):
        path = path.parent
    return path


def _free_bytes(path: Path) -> int | None:
    try:
        probe = Path(os.path.abspath(path))
        while not probe.exists():
            probe = probe.parent
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def write_error(
    err: OSError,
    path: str | os.PathLike,
    *,
    needed: int | None = None,
    written: int | None = None,
    hint: str | None = None,
) -> WriteError:
    """The one-line :class:`WriteError` for an :class:`OSError` met while writing ``path``.

    ``needed`` is the size of what was being written, when known; ``written`` how much of it made it
    to disk before the error (the need is then at least that).  ``hint`` replaces the default advice.
    """
    path = Path(path)
    code = err.errno
    if code in _FULL:
        free = _free_bytes(path)
        if needed is not None:
            need = f"it needs {human(needed)}"
        elif written:
            need = f"it needs more than the {human(written)} written before the disk filled up"
        else:
            need = "it needs more space"
        have = f", {human(free)} are free" if free is not None else ""
        what = (
            "the disk quota is exceeded" if code == errno.EDQUOT else f"no space left on {_mount_point(path)}"
        )
        fix = hint or "free some space (or write elsewhere) and run the same command again"
        return WriteError(f"cannot write {path}: {what} ({need}{have}); {fix}", path=path, errno_=code)
    if code in _DENIED:
        folder = path.parent if not path.is_dir() else path
        fix = hint or (
            f"make {folder} writable for you (chmod/chown), or write elsewhere, "
            "then run the same command again"
        )
        return WriteError(f"cannot write {path}: permission denied; {fix}", path=path, errno_=code)
    if code in _READ_ONLY:
        fix = hint or "write to another file system, then run the same command again"
        return WriteError(
            f"cannot write {path}: {_mount_point(path)} is read-only; {fix}", path=path, errno_=code
        )
    return WriteError(
        f"cannot write {path}: {err.strerror or err}; check the path, then run the same command again",
        path=path,
        errno_=code,
    )


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_folder(folder: str | os.PathLike, *, needed: int | None = None) -> Path:
    """``mkdir -p`` that raises a one-line :class:`WriteError` when the folder cannot be created."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise PairlessError(f"{folder} exists and is not a folder; choose another output path") from None
    except OSError as err:
        if err.errno in WRITE_ERRNOS:
            raise write_error(err, folder, needed=needed) from None
        raise
    return folder


def temporary_folder(parent: str | os.PathLike, *, prefix: str, suffix: str = ".part") -> Path:
    """A new empty folder in ``parent`` with ordinary permissions (``mkdtemp`` makes it ``0700``)."""
    parent = make_folder(parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
    except OSError as err:
        if err.errno in WRITE_ERRNOS:
            raise write_error(err, parent) from None
        raise
    os.chmod(tmp, folder_mode())
    return tmp


@contextlib.contextmanager
def atomic_path(
    target: str | os.PathLike, *, suffix: str | None = None, size: int | None = None, hint: str | None = None
) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only if the block succeeds.

    The temporary file lives in the target's folder so the final ``os.replace`` is atomic; it is
    flushed to disk first.  On any exception it is removed, so a failed or killed write never leaves a
    truncated ``target``.  ``suffix`` defaults to the target's own (some writers choose the format
    from it).  A full disk, a missing permission or a read-only file system, met anywhere in the
    block, is raised as a one-line :class:`WriteError` naming ``target``, the ``size`` of what is
    being written (when given) and the free space; ``hint`` replaces its advice.
    """
    target = Path(target)
    check_file_target(target)  # before any work goes into a write that would be refused at the end
    make_folder(target.parent, needed=size)
    suffix = "".join(target.suffixes) if suffix is None else suffix
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".part{suffix}", dir=target.parent)
    except OSError as err:
        if err.errno in WRITE_ERRNOS:
            raise write_error(err, target, needed=size, hint=hint) from None
        raise
    tmp_path = Path(tmp)
    try:
        # mkstemp creates the file private (0600); give it the permissions an ordinary new file gets.
        os.fchmod(fd, file_mode())
    finally:
        os.close(fd)
    try:
        yield tmp_path
        if tmp_path.is_file():
            _fsync_file(tmp_path)
        check_replace(target)
        os.replace(tmp_path, target)
        _record_created(target)
    except OSError as err:
        written = _size(tmp_path)
        tmp_path.unlink(missing_ok=True)
        if err.errno in WRITE_ERRNOS:
            raise write_error(err, target, needed=size, written=written, hint=hint) from None
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes(
    target: str | os.PathLike, data: bytes | bytearray | memoryview, *, hint: str | None = None
) -> Path:
    """Write ``data`` to ``target`` atomically (see :func:`atomic_path`); errors name its exact size."""
    target = Path(target)
    view = memoryview(data).cast("B")
    with atomic_path(target, size=len(view), hint=hint) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            done = 0
            while done < len(view):
                done += os.write(fd, view[done : done + _CHUNK])
        finally:
            os.close(fd)
    return target


@contextlib.contextmanager
def atomic_folder(target: Path, *, size: int | None = None) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it replaces ``target``, else it is removed.

    The folder gets ordinary permissions (``0777`` less the umask; ``mkdtemp`` makes it private).  A
    full disk or a missing permission met in the block is a one-line :class:`WriteError` naming
    ``target`` and the ``size`` of what is being written.
    """
    check_replace(target)
    tmp = temporary_folder(target.parent, prefix=f".{target.name}.")
    try:
        yield tmp
        replace_folder(tmp, target)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if err.errno in WRITE_ERRNOS:
            raise write_error(err, target, needed=size) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_folder(source: Path, target: Path) -> None:
    """Move the folder ``source`` onto ``target`` (same file system), replacing any folder there.

    A folder cannot be renamed over a non-empty one, so the old one is first renamed aside: a reader
    sees the old folder or the new one, never a mixture, and a kill in between leaves the new one
    whole in ``source`` and the old one whole beside it.
    """
    check_replace(target)
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.replace(target, old / target.name)
        os.replace(source, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(source, target)
    _record_created(target)


def move_into_place(source: Path, target: Path) -> None:
    """Rename a finished file or folder (written under another name) onto ``target``."""
    if source.is_dir():
        replace_folder(source, target)
        return
    check_replace(target)
    os.replace(source, target)
    _record_created(target)


# --------------------------------------------------------------------------------------------------
# What a run may replace


@dataclass
class _Run:
    inputs: set[Path]
    around_inputs: set[Path]  # every folder that holds an input: replacing one would replace the input
    outputs: list[tuple[Path, bool]]  # (output file or folder, owned: the run may replace anything in it)
    overwrite: bool
    created: set[Path] = field(default_factory=set)


_RUN: contextvars.ContextVar[_Run | None] = contextvars.ContextVar("pairless_run", default=None)


def _resolved(path: str | os.PathLike) -> Path:
    """The absolute path, its folders resolved but not its last part (a link there is replaced, not read)."""
    path = Path(os.path.abspath(path))
    return path.parent.resolve() / path.name


@contextlib.contextmanager
def guarded_run(
    *,
    inputs: Iterable[str | os.PathLike] = (),
    outputs: Iterable[str | os.PathLike] = (),
    owned: Iterable[str | os.PathLike] = (),
    overwrite: bool = False,
) -> Iterator[None]:
    """Within the block, writes obey what a run may replace (:func:`check_replace`).

    ``inputs`` (files or folders) are never written to or replaced, whatever ``overwrite`` says.  In
    ``outputs`` (a file, or a folder whose contents are outputs) nothing that existed before the run is
    replaced unless ``overwrite``; in ``owned`` (a model folder a training run has checked is its own)
    the run may replace anything.  Paths outside all of them (caches, temporary files) are not checked.
    A run inside another (a study that trains models) keeps the outer run's inputs and outputs too.
    """
    outer = _RUN.get()
    sources = {_resolved(p) for p in inputs}
    sources |= {p.resolve() for p in sources if p.exists()}  # a link's target is an input too
    run = _Run(
        sources | (outer.inputs if outer else set()),
        {a for p in sources for a in p.parents} | (outer.around_inputs if outer else set()),
        [(_resolved(p), False) for p in outputs]
        + [(_resolved(p), True) for p in owned]
        + (outer.outputs if outer else []),
        overwrite or (outer.overwrite if outer else False),
        outer.created if outer else set(),
    )
    token = _RUN.set(run)
    try:
        yield
    finally:
        _RUN.reset(token)


def check_replace(target: str | os.PathLike) -> None:
    """Refuse, in one line, to write ``target`` where the current run may not (see :func:`guarded_run`)."""
    run = _RUN.get()
    if run is None:
        return
    path = _resolved(target)
    real = path.resolve() if os.path.lexists(path) else path
    inside = next((p for p in (path, real, *path.parents) if p in run.inputs), None)
    if inside is None and path in run.around_inputs:
        inside = next(p for p in run.inputs if path in p.parents)
    if inside is not None:
        raise PairlessError(
            f"refusing to write {target}: it would overwrite the input {inside}; choose another output path"
        )
    if not os.path.lexists(path) or path in run.created or run.overwrite:
        return
    for output, owned in run.outputs:
        if path == output or output in path.parents:
            if owned:
                return
            raise PairlessError(
                f"{target} already exists and was not written by this run; pass --overwrite to replace it, "
                f"or choose another output path"
            )


def check_file_target(target: str | os.PathLike) -> None:
    """Refuse, in one line, a file target that is a folder or that the current run may not replace."""
    if Path(target).is_dir():
        raise PairlessError(f"{target} is a folder; give the name of a file to write")
    check_replace(target)


def _record_created(target: str | os.PathLike) -> None:
    run = _RUN.get()
    if run is not None:
        run.created.add(_resolved(target))
