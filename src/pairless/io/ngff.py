"""OME-Zarr (OME-NGFF 0.4 and 0.5) images: read the full-resolution level with its axes and
physical scale, write a denoised result block by block with the same axes and scale, a 2× pyramid
and provenance.

An OME-Zarr image is a zarr group whose ``multiscales`` metadata (under ``attrs["ome"]`` in 0.5,
at the top level in 0.4) lists its axes (``t``, ``c``, ``z``, ``y``, ``x``; each with a type and an
optional unit) and its resolution levels, each a zarr array with a ``scale`` (and optional
``translation``) coordinate transformation.  pairless denoises the first (full-resolution) level.

:func:`open_ngff` reads the metadata and opens that level lazily.  :class:`NGFFWriter` creates the
output group in a folder the caller has made (:func:`pairless.inference.chunked.denoise_chunked` uses a
temporary folder that it renames at the end, so a killed run leaves nothing under the final name),
takes the full-resolution array block by block, then builds each pyramid level from the previous
one block by block (a 2×2 mean in Y and X; other axes keep their size), and writes the metadata
through ome-zarr-py (``pairless[ome]``) so it follows the specification.  Memory is a few blocks,
whatever the image's size.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pairless.errors import PairlessError

VERSIONS = ("0.4", "0.5")
_LETTER = {"t": "T", "c": "C", "z": "Z", "y": "Y", "x": "X"}
MIN_LEVEL_EDGE = 64  # the pyramid stops before Y or X of a level would fall below this


@dataclass
class NGFFImage:
    """An opened OME-Zarr image: its full-resolution array and what is needed to write one like it."""

    path: Path
    version: str
    axes: list[dict]  # NGFF axes objects: name, type, unit (as stored)
    scale: list[float]  # of the full-resolution level
    translation: list[float] | None
    array: object  # the zarr array of the full-resolution level (read lazily)
    level: str  # its path inside the group
    name: str | None = None
    omero: dict | None = None
    extra: dict = field(default_factory=dict)  # other group attributes, carried to the output

    @property
    def letters(self) -> str:
        """The axes in pairless letters, e.g. ``"TCZYX"``."""
        return "".join(_LETTER[a["name"].lower()] for a in self.axes)

    @property
    def units(self) -> dict[str, str]:
        return {a["name"]: a["unit"] for a in self.axes if a.get("unit")}


def is_ngff(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a zarr group with OME-NGFF ``multiscales`` metadata."""
    return _multiscales(_group_attrs(Path(path))) is not None


def open_ngff(path: str | os.PathLike) -> NGFFImage:
    """Open the OME-Zarr image at ``path`` (its first multiscale image, full-resolution level).

    Raises
    ------
    PairlessError
        One line naming the problem: not a zarr group, no ``multiscales`` metadata, an axis pairless
        cannot name, axes that do not end in y, x, or a level that is missing.
    """
    import zarr

    path = Path(path)
    attrs = _group_attrs(path)
    if attrs is None:
        raise PairlessError(
            f"{str(path)!r} is not a zarr group; an OME-Zarr image is a group with multiscales metadata"
        )
    found = _multiscales(attrs)
    if found is None:
        raise PairlessError(
            f"{str(path)!r} is a zarr group without OME-Zarr multiscales metadata; pass an OME-Zarr image, "
            f"or the array inside the group (e.g. {path}/0)"
        )
    version, multiscale, ome = found
    try:
        axes = [dict(a) if isinstance(a, dict) else {"name": str(a)} for a in multiscale["axes"]]
        dataset = multiscale["datasets"][0]
        level = str(dataset["path"])
    except (KeyError, IndexError, TypeError):
        raise PairlessError(
            f"{str(path)!r} has malformed multiscales metadata (it needs axes and at least one dataset with a"
            " path)"
        ) from None
    names = [a.get("name", "") for a in axes]
    unknown = [n for n in names if str(n).lower() not in _LETTER]
    if unknown:
        raise PairlessError(
            f"{str(path)!r} has axes {', '.join(map(str, names))}: pairless denoises OME-Zarr images with"
            f" axes named t, c, z, y, x, not {', '.join(map(str, unknown))}"
        )
    letters = "".join(_LETTER[str(n).lower()] for n in names)
    if len(set(letters)) != len(letters) or not letters.endswith("YX"):
        raise PairlessError(
            f"{str(path)!r} has axes {', '.join(names)}: pairless can denoise only images whose last two axes"
            " are y, x (as OME-NGFF orders them: t, c, z, y, x); transpose the image first"
        )
    try:
        array = zarr.open_array(str(path / level), mode="r")
    except Exception as err:  # a missing or damaged level
        raise PairlessError(
            f"{str(path)!r} lists level {level!r}, which cannot be opened"
            f" ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
        ) from None
    if array.ndim != len(axes):
        raise PairlessError(
            f"{str(path)!r}: level {level!r} has {array.ndim} dimensions but the metadata names {len(axes)}"
            " axes"
        )
    scale, translation = _transforms(
        multiscale.get("coordinateTransformations"), dataset.get("coordinateTransformations"), len(axes)
    )
    extra = {k: v for k, v in attrs.items() if k not in ("multiscales", "ome", "omero", "pairless")}
    return NGFFImage(
        path=path,
        version=version,
        axes=axes,
        scale=scale,
        translation=translation,
        array=array,
        level=level,
        name=multiscale.get("name"),
        omero=ome.get("omero"),
        extra=extra,
    )


def _group_attrs(path: Path) -> dict | None:
    """The attributes of the zarr group at ``path`` (v2 or v3), or None when it is not a group."""
    import zarr

    if not path.is_dir():
        return None
    try:
        node = zarr.open(str(path), mode="r")
    except Exception:  # not a zarr store at all
        return None
    if not isinstance(node, zarr.Group):
        return None
    return dict(node.attrs)


def _multiscales(attrs: dict | None) -> tuple[str, dict, dict] | None:
    """``(version, first multiscale, the dict holding NGFF keys)`` from group attributes, if present."""
    if not attrs:
        return None
    ome = attrs.get("ome") if isinstance(attrs.get("ome"), dict) else None
    if ome is not None and ome.get("multiscales"):
        holder = ome
        version = str(ome.get("version", "0.5"))
    elif attrs.get("multiscales"):
        holder = attrs
        version = None
    else:
        return None
    multiscales = holder["multiscales"]
    if not isinstance(multiscales, list) or not multiscales or not isinstance(multiscales[0], dict):
        return None
    multiscale = multiscales[0]
    version = version or str(multiscale.get("version", "0.4"))
    return version, multiscale, holder


def _transforms(outer, inner, ndim: int) -> tuple[list[float], list[float] | None]:
    """Combined scale and translation of a level (the multiscale-wide transform applies after the level's)."""
    scale = [1.0] * ndim
    translation = None
    for transforms in (inner, outer):
        for t in transforms or []:
            if t.get("type") == "scale" and "scale" in t:
                s = [float(v) for v in t["scale"]]
                if translation is not None:
                    translation = [a * b for a, b in zip(translation, s)]
                scale = [a * b for a, b in zip(scale, s)]
            elif t.get("type") == "translation" and "translation" in t:
                shift = [float(v) for v in t["translation"]]
                translation = [a + b for a, b in zip(translation or [0.0] * ndim, shift)]
    if len(scale) != ndim:
        raise PairlessError(
            f"a scale transformation has {len(scale)} values for {ndim} axes; the metadata is malformed"
        )
    return scale, translation


def pyramid_shapes(shape: tuple[int, ...], letters: str, levels: int | None = None) -> list[tuple[int, ...]]:
    """Shapes of the pyramid levels: Y and X halved (rounded up) per level, the other axes kept.

    ``levels=None`` adds levels while Y and X of the next one stay at least :data:`MIN_LEVEL_EDGE`.
    """
    yx = [letters.index("Y"), letters.index("X")]
    shapes = [tuple(shape)]
    while levels is None or len(shapes) < levels:
        nxt = tuple(math.ceil(n / 2) if i in yx else n for i, n in enumerate(shapes[-1]))
        if levels is None and min(nxt[i] for i in yx) < MIN_LEVEL_EDGE:
            break
        if levels is not None and nxt == shapes[-1]:
            break
        shapes.append(nxt)
    return shapes


class NGFFWriter:
    """Write an OME-Zarr image like ``like`` (axes, units, scale, version) into the empty folder ``folder``.

    Use :attr:`full` (the full-resolution zarr array, chunked by ``chunks``) to write the data, then
    :meth:`finish` to build the pyramid and write the metadata.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        like: NGFFImage,
        *,
        chunks: tuple[int, ...],
        provenance: dict,
        levels: int | None = None,
        version: str | None = None,
    ):
        import zarr

        _require_ome()
        self.like, self.provenance = like, provenance
        self.version = version or like.version
        if self.version not in VERSIONS:
            self.version = "0.4" if self.version < "0.4" else "0.5"
        self.zarr_format = 2 if self.version == "0.4" else 3
        shape = tuple(like.array.shape)
        self.shapes = pyramid_shapes(shape, like.letters, levels)
        self.chunks = tuple(min(c, n) for c, n in zip(chunks, shape))
        self.group = zarr.open_group(str(folder), mode="w", zarr_format=self.zarr_format)
        self.arrays = [self._create(str(k), s) for k, s in enumerate(self.shapes)]
        self.full = self.arrays[0]

    def _create(self, name: str, shape: tuple[int, ...]):
        chunks = tuple(min(c, n) for c, n in zip(self.chunks, shape))
        options = {"shape": shape, "chunks": chunks, "dtype": "float32", "fill_value": 0.0}
        if self.zarr_format == 2:
            # NGFF 0.4 stores its zarr v2 chunks in nested folders ("/" separator)
            options["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
        else:
            options["dimension_names"] = [a["name"] for a in self.like.axes]
        return self.group.create_array(name, **options)

    def finish(self) -> None:
        """Build levels 1… from the previous level block by block, then write the metadata."""
        from ome_zarr.format import format_from_version
        from ome_zarr.writer import add_metadata, write_multiscales_metadata

        letters = self.like.letters
        yx = (letters.index("Y"), letters.index("X"))
        for k in range(1, len(self.arrays)):
            _downsample(self.arrays[k - 1], self.arrays[k], yx)
        base_scale = self.like.scale
        base_shift = self.like.translation or [0.0] * len(base_scale)
        datasets = []
        for k in range(len(self.shapes)):
            factor = [2**k if i in yx else 1 for i in range(len(base_scale))]
            scale = [s * f for s, f in zip(base_scale, factor)]
            transforms = [{"type": "scale", "scale": scale}]
            # a 2^k mean's pixel centre lies (2^k - 1)/2 input pixels in from the block's corner
            shift = [t + (f - 1) / 2 * s for t, f, s in zip(base_shift, factor, base_scale)]
            if self.like.translation is not None or k > 0:
                transforms.append({"type": "translation", "translation": shift})
            datasets.append({"path": str(k), "coordinateTransformations": transforms})
        fmt = format_from_version(self.version)
        metadata = {
            "method": "pairless.io.ngff: 2x2 mean in y and x per level",
            "version": self.provenance.get("pairless"),
        }
        write_multiscales_metadata(
            self.group,
            datasets,
            fmt=fmt,
            axes=[dict(a) for a in self.like.axes],
            name=self.like.name or self.provenance.get("source_name"),
            metadata=metadata,
        )
        holder = self.group.attrs["ome"] if self.zarr_format == 3 else self.group.attrs
        multiscales = holder["multiscales"]
        multiscales[0]["type"] = "mean"
        extra = {"multiscales": multiscales, **({"omero": self.like.omero} if self.like.omero else {})}
        add_metadata(self.group, extra, fmt=fmt)
        for key, value in self.like.extra.items():
            self.group.attrs[key] = value
        self.group.attrs["pairless"] = self.provenance


def _downsample(source, target, yx: tuple[int, int]) -> None:
    """Fill ``target`` with 2×2 means over Y, X of ``source``, one target chunk at a time."""
    chunks = target.chunks
    shape = target.shape
    for corner in itertools.product(*[range(0, n, c) for n, c in zip(shape, chunks)]):
        out = tuple(slice(c, min(c + e, n)) for c, e, n in zip(corner, chunks, shape))
        src = tuple(
            slice(2 * s.start, min(2 * s.stop, source.shape[i])) if i in yx else s for i, s in enumerate(out)
        )
        block = np.asarray(source[src], dtype=np.float32)
        for i in yx:  # an odd last row/column is averaged with itself
            want = 2 * (out[i].stop - out[i].start)
            if block.shape[i] < want:
                block = np.concatenate([block, np.take(block, [-1], axis=i)], axis=i)
        view = list(block.shape)
        for i in sorted(yx, reverse=True):
            view[i : i + 1] = [view[i] // 2, 2]
        reduced = block.reshape(view).mean(axis=(yx[0] + 1, yx[1] + 2))
        target[out] = reduced.astype(np.float32)


def _require_ome() -> None:
    import importlib.util

    if importlib.util.find_spec("ome_zarr") is None:
        raise PairlessError(
            "writing OME-Zarr needs ome-zarr-py, which is not installed; pip install 'pairless[ome]'"
        )
