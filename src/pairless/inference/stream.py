"""Denoising many files one at a time, with the all-or-nothing guarantee of denoising them together.

:func:`denoise_files` is what ``pairless denoise`` runs.  It first checks every input from its header
alone (format, shape, dtype, axes, and that the denoiser can work on it) together with its target,
so a bad file among thousands is refused before anything is computed or written.  It then reads,
denoises and writes one input at a time into a staging folder inside ``--out`` (same file system,
so the final moves are renames), and moves the results into place at the end.  Peak memory is that
of the largest single image, whatever the number of inputs.

If an input fails later (NaN values show only in the pixels, a denoiser refuses an image, the disk
fills up), the staging folder is removed and nothing is written, unless ``keep_going``: then the
other inputs are still denoised (except after a write error: the disk is full for them too), the
finished ones are moved into place, and the error names exactly the inputs that were not done.
A run killed at any point leaves no partial file under a final name; its staging folder (named
after its host and process) is removed by the next run into the same folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pairless.denoiser import Denoiser, worked_axes
from pairless.errors import PairlessError
from pairless.io.files import WriteError, human, make_folder, move_into_place, temporary_folder
from pairless.io.processes import alive, start_ticks

STAGING_PREFIX = ".pairless-denoise-"


def denoise_files(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    denoiser: Denoiser,
    *,
    axes: str | None = None,
    keep_going: bool = False,
    overwrite: bool = False,
    block: int = 128,
    halo: int = 32,
    progress: bool | None = None,
    echo: Callable[[str], None] = print,
) -> list[Path]:
    """Denoise each input into ``out/<its name>``; return the written paths (see the module notes).

    ``.zarr`` inputs are denoised block by block (:func:`pairless.inference.chunked.denoise_chunked` with
    ``block`` and ``halo``).  ``progress``: a bar over the files (default: when stderr is a terminal).
    ``echo`` receives one ``input -> output`` line per result once it is in place.
    """
    inputs = [Path(p) for p in inputs]
    out = Path(out)
    if not inputs:
        raise PairlessError("no inputs to denoise; pass one or more image files")
    seen: set[str] = set()
    clash = next((p.name for p in inputs if p.name in seen or seen.add(p.name)), None)
    if clash is not None:
        raise PairlessError(
            f"several inputs are named {clash!r} and would all be written to {out / clash}; pass each file "
            "once, and denoise same-named files from different folders into separate --out folders"
        )
    guard = _Inputs(inputs)
    needed = sum(
        _validate(path, out / path.name, denoiser, axes=axes, guard=guard, overwrite=overwrite)
        for path in inputs
    )
    _check_space(out, needed)

    created = not out.exists()
    make_folder(out, needed=needed)
    _remove_stale_staging(out)
    staging = temporary_folder(out, prefix=f"{STAGING_PREFIX}{_owner()}-")
    done: list[tuple[Path, Path]] = []
    failed: dict[Path, str] = {}
    show = sys.stderr.isatty() if progress is None else progress
    try:
        with _file_progress(show and len(inputs) > 1, total=len(inputs)) as advance:
            for index, path in enumerate(inputs):
                try:
                    done.append(
                        (
                            path,
                            _denoise_one(
                                path,
                                staging / path.name,
                                denoiser,
                                axes=axes,
                                block=block,
                                halo=halo,
                                progress=show and len(inputs) == 1,
                            ),
                        )
                    )
                except WriteError as err:  # named by its final path, not the staging folder's
                    message = str(err).replace(str(staging), str(out))
                    if not keep_going:
                        raise WriteError(message, path=out / path.name, errno_=err.errno) from None
                    failed[path] = message
                    for rest in inputs[index + 1 :]:
                        failed[rest] = "not started: the disk could not be written"
                    break
                except PairlessError as err:
                    message = str(err).replace(str(staging), str(out))
                    if not keep_going:
                        raise PairlessError(
                            f"{message}; nothing was written to {out} (--keep-going denoises and keeps the"
                            " other inputs)"
                        ) from None
                    failed[path] = message
                advance()
        written = []
        for path, staged in done:
            target = out / path.name
            move_into_place(staged, target)
            written.append(target)
            echo(f"{path} -> {target}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
    if failed:
        listed = "; ".join(f"{p} ({_reason(p, failed[p])})" for p in inputs if p in failed)
        kept = f"the other {len(written)} are in {out}" if written else "nothing was written"
        raise PairlessError(f"{len(failed)} of {len(inputs)} inputs were not denoised: {listed}; {kept}")
    return written


def _reason(path: Path, message: str) -> str:
    return message.removeprefix(f"{path}: ").replace("\n", " ")


class _Inputs:
    """The inputs, resolved once, so that checking a target against thousands of them stays cheap."""

    def __init__(self, inputs: list[Path]):
        self.paths = {p.resolve(): p for p in inputs}
        self.files = {}
        for resolved, p in self.paths.items():
            try:
                info = resolved.stat()
            except OSError:
                continue
            self.files[(info.st_dev, info.st_ino)] = p

    def overwritten_by(self, target: Path) -> Path | None:
        """The input that writing ``target`` would overwrite (same path or file, or inside it), if any."""
        resolved = target.resolve()
        for candidate in (resolved, *resolved.parents):
            if candidate in self.paths:
                return self.paths[candidate]
        try:
            info = target.stat()
        except OSError:
            return None
        return self.files.get((info.st_dev, info.st_ino))


def _validate(
    path: Path, target: Path, denoiser: Denoiser, *, axes: str | None, guard: _Inputs, overwrite: bool
) -> int:
    """Refuse ``path`` or its target from headers alone; return the bytes its output needs (float32)."""
    from pairless.io import dicom, inspect_image
    from pairless.io.formats import check_target, format_of_suffix

    if path.suffix.lower() == ".zarr":
        shape, worked = _inspect_zarr(path, denoiser, axes=axes)
        nbytes = 4
        for n in shape:
            nbytes *= n
    else:
        info = inspect_image(path, axes=axes)
        try:
            worked_axes(info.axes, denoiser)
        except PairlessError as err:
            raise PairlessError(f"{path}: {err}") from None
        nbytes = info.nbytes // info.dtype.itemsize * 4
    overwritten = guard.overwritten_by(target)
    if overwritten is not None:
        raise PairlessError(
            f"refusing to write {target}: it would overwrite the input {overwritten}; choose another output"
            " folder"
        )
    if os.path.lexists(target) and not overwrite:
        raise PairlessError(
            f"{target} already exists; pass --overwrite to replace it, or choose another --out (nothing was"
            " written)"
        )
    if path.suffix.lower() == ".zarr":
        if target.is_file():
            raise PairlessError(
                f"{target}: is a file; the output of a .zarr input is a folder, choose another --out"
            )
    else:
        dicom = (
            path.is_dir()
            or format_of_suffix(path) == "dicom"
            or (path.suffix == "" and dicom.has_preamble(path))
        )
        kind = format_of_suffix(target) or ("dicom" if dicom else None)
        if kind is not None:
            check_target(target, kind)
    return nbytes


def _inspect_zarr(path: Path, denoiser: Denoiser, *, axes: str | None) -> tuple[tuple[int, ...], list[str]]:
    from pairless.inference.chunked import _open_source
    from pairless.io import validate_axes

    with _open_source(path) as (array, stored_axes, _attributes):
        shape, dtype = tuple(array.shape), array.dtype
    try:
        layout = validate_axes(axes or stored_axes or {2: "YX", 3: "ZYX"}.get(len(shape), ""), len(shape))
    except PairlessError as err:
        raise PairlessError(f"{path}: {err}") from None
    if dtype.kind not in "buif":
        raise PairlessError(f"{str(path)!r} holds {dtype} values; pairless denoises integers or real floats")
    if 0 in shape:
        raise PairlessError(f"{str(path)!r} is empty (shape {shape}); pass an array with voxels")
    if getattr(denoiser, "auto", False):
        raise PairlessError(
            f"{path}: --auto tunes the filter per image, which out-of-core denoising would do per block"
            " (seams); set --sigma/--size instead"
        )
    try:
        return shape, worked_axes(layout, denoiser)
    except PairlessError as err:
        raise PairlessError(f"{path}: {err}") from None


def _check_space(out: Path, needed: int) -> None:
    probe = Path(os.path.abspath(out))
    while not probe.exists():
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return
    if needed > free:
        raise PairlessError(
            f"cannot write the outputs into {out}: they need about {human(needed)} and {human(free)} are free"
            " on its file system; free some space or choose another --out (nothing was written)"
        )


def _denoise_one(path: Path, staged: Path, denoiser: Denoiser, *, axes, block, halo, progress) -> Path:
    # ``staged`` is in a new staging folder, so it cannot be an input; each final target was checked
    # against every input in _validate
    if path.suffix.lower() == ".zarr":
        from pairless.inference.chunked import denoise_chunked

        return denoise_chunked(path, staged, denoiser, axes=axes, block=block, halo=halo, progress=progress)
    from pairless.denoiser import denoise_array
    from pairless.io import read_image, write_image

    image = read_image(path, axes=axes)
    result = denoise_array(image.data, denoiser, axes=image.axes)
    out = image.with_data(result)
    out.meta["derived_by"] = (getattr(denoiser, "provenance", None) or {}).get(
        "method", type(denoiser).__name__
    )
    return write_image(staged, out)


def _owner() -> str:
    """``host-pid-ticks``: who a staging folder belongs to, in its name (known from its creation on)."""
    return f"{socket.gethostname()}-{os.getpid()}-{start_ticks(os.getpid()) or 0}"


def _remove_stale_staging(out: Path) -> None:
    """Remove the staging folders that runs killed on this host left behind (their process is gone)."""
    for folder in out.glob(f"{STAGING_PREFIX}*.part"):
        try:
            host, pid, ticks, _random = (
                folder.name.removeprefix(STAGING_PREFIX).removesuffix(".part").rsplit("-", 3)
            )
            pid, ticks = int(pid), int(ticks)
        except ValueError:
            continue
        if host == socket.gethostname() and not alive(pid, ticks or None):
            shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _file_progress(show: bool, *, total: int):
    if not show:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("denoising files"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("files", total=total)
        yield lambda: bar.advance(task)
