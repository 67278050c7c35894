"""Out-of-core denoising: volumes larger than memory, block by block, into a zarr array.

:func:`denoise_chunked` reads the source (a zarr array, or a TIFF through tifffile's zarr view, tile
by tile or page by page) one block at a time together with a ``halo`` of neighbouring voxels,
denoises that region with :func:`pairless.denoiser.denoise_array` and writes only the block's
interior into the output.  The output is a float32 zarr (v3) array of the source's shape whose
chunks are the blocks, so every write fills whole chunks and nothing is read back.  Peak memory is
a few copies of one block with its halo, whatever the volume's size.

When the denoiser's support (a Gaussian's ``4σ``, a network's receptive field) is at most the halo,
every block sees all the voxels its interior depends on and the result equals denoising the whole
volume at once; a learned model's own tiling then differs only by its blending, as between tiles.
The output is written into a temporary folder beside the target and renamed at the end, so a failed
run leaves nothing half-written.

An OME-Zarr (NGFF 0.4 or 0.5) source is denoised at its full-resolution level and written as an
OME-Zarr image of the same version, axes, units and scale, with a 2× pyramid built block by block
after the full level and provenance in ``attrs["pairless"]`` (see :mod:`pairless.io.ngff`).

The cut (:class:`BlockPlan`), the output (:func:`create_output`) and the work on one block
(:func:`denoise_block`) are shared with :mod:`pairless.inference.distributed`, which runs the same
blocks as tasks on a Dask cluster, so both write the same array.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pairless.denoiser import Denoiser, denoise_array, worked_axes
from pairless.errors import PairlessError

SOURCES = ".zarr (a zarr array or an OME-Zarr image), .tif/.tiff"


def denoise_chunked(
    source: str | os.PathLike,
    target: str | os.PathLike,
    denoiser: Denoiser,
    *,
    axes: str | None = None,
    block: int | Sequence[int] = 128,
    halo: int = 32,
    sigma: float | None = None,
    protect: Sequence[str | os.PathLike] = (),
    progress: bool = False,
) -> Path:
    """Denoise the array at ``source`` block by block into a new zarr array at ``target`` (``.zarr``).

    Parameters
    ----------
    source : a zarr array folder (``.zarr``) or a TIFF file (its first series, full resolution).
    target : the output zarr folder; replaced if it exists, never equal to ``source`` or a ``protect`` path.
    denoiser : any :class:`~pairless.denoiser.Denoiser` (not one that tunes itself per image: each
        block would be tuned differently).
    axes : the stored layout, ending in YX; default: the zarr attribute ``axes``, the TIFF's axes, or
        YX / ZYX by dimension.
    block : edge of a block along each axis the denoiser works across (1 along the others), or one
        edge per array axis.  Memory grows with the block, not with the volume.
    halo : voxels read around each block along the axes the denoiser works across; make it at
        least the denoiser's support (e.g. 4σ for a Gaussian, the receptive radius of a network).
    sigma : passed to the denoiser.
    progress : show a progress bar over the blocks.

    Returns
    -------
    The target path.  The output has ``attrs["axes"]`` and the source's other zarr attributes.
    """
    from pairless.io.files import atomic_folder

    source, target = Path(source), Path(target)
    check_request(source, target, halo=halo, protect=protect)
    check_denoiser(denoiser)
    with _open_source(source) as (array, stored_axes, attributes):
        ngff = _ngff_source(source)
        plan = plan_blocks(
            source, array, denoiser, axes=axes or stored_axes, block=block, halo=halo, ngff=ngff
        )
        with atomic_folder(target, size=plan.nbytes) as tmp:
            out, writer = create_output(tmp, plan, attributes, ngff, _provenance(denoiser, source))
            with _progress(progress, total=plan.count) as advance:
                for index in range(plan.count):
                    denoise_block(array, out, plan, index, denoiser, sigma=sigma)
                    advance()
            if writer is not None:
                writer.finish()
    return target


@dataclass(frozen=True)
class BlockPlan:
    """How a volume is cut: blocks of ``edges`` (the output's chunks) read with ``halos`` around them.

    Blocks are numbered in C order over the grid of blocks, so a block's number names it in any process.
    """

    shape: tuple[int, ...]
    axes: str
    edges: tuple[int, ...]
    halos: tuple[int, ...]

    @property
    def grid(self) -> tuple[int, ...]:
        return tuple(-(-n // e) for n, e in zip(self.shape, self.edges))

    @property
    def count(self) -> int:
        return int(np.prod(self.grid))

    @property
    def nbytes(self) -> int:
        """The size of the float32 output."""
        return int(np.prod(self.shape)) * 4

    def region(self, index: int) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        """``(inner, outer)`` of block ``index``: the region it writes, and that region with its halo."""
        corner = [int(i) * e for i, e in zip(np.unravel_index(index, self.grid), self.edges)]
        inner = tuple(slice(c, min(c + e, n)) for c, e, n in zip(corner, self.edges, self.shape))
        outer = tuple(
            slice(max(s.start - h, 0), min(s.stop + h, n)) for s, h, n in zip(inner, self.halos, self.shape)
        )
        return inner, outer


def check_request(
    source: Path, target: Path, *, halo: int, protect: Sequence[str | os.PathLike] = ()
) -> None:
    """Refuse a target that is not a ``.zarr`` folder or is an input, and a negative halo."""
    if target.suffix.lower() != ".zarr":
        raise PairlessError(
            f"the chunked output {str(target)!r} must be a .zarr folder; name it e.g. {target.stem}.zarr"
        )
    for path in (source, *map(Path, protect)):
        if target.resolve() == path.resolve():
            raise PairlessError(
                f"refusing to overwrite the input {str(path)!r}; choose another output folder"
            )
    if halo < 0:
        raise PairlessError(f"the halo must be 0 or more voxels, got {halo}")


def check_denoiser(denoiser) -> None:
    """Refuse a denoiser that cannot work block by block (one that tunes itself per image)."""
    if getattr(denoiser, "auto", False):
        raise PairlessError(
            "--auto tunes the filter per image, which out-of-core denoising would do per block (seams); "
            "set --sigma/--size instead"
        )


def plan_blocks(
    source: Path, array, denoiser, *, axes: str | None, block: int | Sequence[int], halo: int, ngff=None
) -> BlockPlan:
    """Check the opened ``array`` and cut it into blocks for ``denoiser`` (anything with its
    ``spatial_ndim``): the halo goes only along the axes the denoiser works across."""
    from pairless.io import validate_axes

    shape = tuple(array.shape)
    axes = validate_axes(axes or {2: "YX", 3: "ZYX"}.get(len(shape), ""), len(shape))
    if array.dtype.kind not in "buif":
        raise PairlessError(
            f"{str(source)!r} holds {array.dtype} values; pairless denoises integers or real floats"
        )
    if 0 in shape:
        raise PairlessError(f"{str(source)!r} is empty (shape {shape}); pass an array with voxels")
    across = worked_axes(axes, denoiser)  # the others hold separate images and need no halo
    worked = tuple(a in across for a in axes)
    edges = _block_edges(block, shape, worked)
    if ngff is not None and axes != ngff.letters:
        raise PairlessError(
            f"{str(source)!r} is an OME-Zarr image with axes {ngff.letters}; drop --axes {axes} (its"
            " metadata names them)"
        )
    return BlockPlan(shape, axes, edges, tuple(halo if w else 0 for w in worked))


def create_output(folder: Path, plan: BlockPlan, attributes: dict, ngff, provenance: dict):
    """Create the empty output in ``folder``, chunked by the blocks: ``(full-resolution array, NGFF writer
    or None)``."""
    import zarr

    if ngff is not None:
        from pairless.io.ngff import NGFFWriter

        writer = NGFFWriter(folder, ngff, chunks=plan.edges, provenance=provenance)
        return writer.full, writer
    out = zarr.create_array(
        store=str(folder),
        shape=plan.shape,
        chunks=plan.edges,
        dtype="float32",
        attributes={**attributes, "axes": plan.axes},
    )
    return out, None


def denoise_block(array, out, plan: BlockPlan, index: int, denoiser: Denoiser, *, sigma=None) -> float:
    """Read block ``index`` with its halo from ``array``, denoise it, write its interior (whole chunks of
    ``out``); return the seconds spent denoising (the rest is reading and writing)."""
    inner, outer = plan.region(index)
    region = np.asarray(array[outer])
    started = time.perf_counter()
    result = denoise_array(region, denoiser, axes=plan.axes, sigma=sigma)
    seconds = time.perf_counter() - started
    out[inner] = result[tuple(slice(i.start - o.start, i.stop - o.start) for i, o in zip(inner, outer))]
    return seconds


def _ngff_source(source: Path):
    """The opened OME-Zarr image at ``source``, or None for a plain zarr array or a TIFF."""
    if source.suffix.lower() != ".zarr" or not source.is_dir():
        return None
    from pairless.io.ngff import is_ngff, open_ngff

    return open_ngff(source) if is_ngff(source) else None


def _provenance(denoiser: Denoiser, source: Path) -> dict:
    """What made an output: pairless's version, the method and model folder (if the denoiser says), the
    source."""
    from pairless import __version__

    described = dict(getattr(denoiser, "provenance", None) or {"method": type(denoiser).__name__})
    return {"pairless": __version__, **described, "source": str(source.resolve()), "source_name": source.name}


@contextlib.contextmanager
def _open_source(path: Path) -> Iterator[tuple[object, str | None, dict]]:
    """Yield ``(array, axes or None, attributes to carry over)`` for a zarr array or a TIFF, read lazily."""
    import zarr

    if not path.exists():
        raise PairlessError(f"input {str(path)!r} does not exist; check the path")
    suffix = path.suffix.lower()
    if suffix == ".zarr":
        try:
            array = zarr.open(str(path), mode="r")
        except Exception as err:  # any zarr failure here means the folder is not a readable zarr store
            raise PairlessError(
                f"{str(path)!r} is not a readable zarr store ({str(err).splitlines()[0]})"
            ) from None
        if not isinstance(array, zarr.Array):
            from pairless.io.ngff import is_ngff, open_ngff

            if not is_ngff(path):
                raise PairlessError(
                    f"{str(path)!r} is a zarr group without OME-Zarr multiscales metadata, not an array; pass"
                    f" an OME-Zarr image or the array inside the group, e.g. {path}/0"
                )
            image = open_ngff(path)  # its full-resolution level; the NGFF metadata is rewritten on output
            yield image.array, image.letters, {}
            return
        attributes = dict(array.attrs)
        axes = attributes.pop("axes", None)
        yield array, axes if isinstance(axes, str) else None, attributes
    elif suffix in (".tif", ".tiff"):
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                stored = tif.series[0].axes
            store = tifffile.imread(path, aszarr=True, series=0, level=0)
        except Exception as err:  # tifffile raises many types for damaged files
            raise PairlessError(
                f"{str(path)!r} is not a readable TIFF ({str(err).splitlines()[0]})"
            ) from None
        with contextlib.closing(store):
            yield zarr.open(store, mode="r"), _tiff_axes(stored), {}
    else:
        raise PairlessError(
            f"out-of-core denoising reads {SOURCES}, not {str(path)!r}; convert it, or denoise it in memory"
        )


def _tiff_axes(stored: str) -> str | None:
    """tifffile's axes in pairless letters (its generic frame letters I, Q, ... become S), if unambiguous."""
    axes = "".join(a if a in "TCZYX" else "S" for a in stored)
    return axes if axes.count("S") <= 1 else None


def _block_edges(
    block: int | Sequence[int], shape: tuple[int, ...], worked: tuple[bool, ...]
) -> tuple[int, ...]:
    edges = tuple(block if w else 1 for w in worked) if isinstance(block, (int, np.integer)) else tuple(block)
    if len(edges) != len(shape) or any(int(e) < 1 for e in edges):
        raise PairlessError(
            f"block {block!r} must be a positive edge, or one positive edge per axis of the array (shape"
            f" {shape})"
        )
    return tuple(min(int(e), n) for e, n in zip(edges, shape))


@contextlib.contextmanager
def _progress(show: bool, *, total: int):
    if not show:
        yield lambda: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("denoising blocks"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
    ) as bar:
        task = bar.add_task("blocks", total=total)
        yield lambda: bar.advance(task)
