"""The Python API: what the command line, napari, the experiments and the benchmarks call.

    import pairless

    model = pairless.fit("ne2ne", ["scan1.tif", "scan2.tif"], out="my-model")   # train; returns the denoiser
    clean = pairless.denoise(noisy, model, axes="YX")                            # an array in, an array out
    pairless.denoise(["scan3.tif"], "my-model", out="denoised/")                 # files in, files out
    filtered = pairless.denoise(noisy, "bm3d", vst=True)                         # a classical filter by name
    rows = pairless.evaluate(["denoised/scan3.tif"], reference="clean3.tif")     # PSNR, NRMSE, SSIM, ...
    pairless.export("my-model", "my-model.zip")                                  # a BioImage Model Zoo
    package

Every function checks its input first and raises :class:`~pairless.errors.PairlessError` with one line
that names the problem and the fix.  The methods and their settings are those of
:mod:`pairless.methods.registry`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from pairless.config import Config
from pairless.denoiser import Denoiser
from pairless.errors import PairlessError
from pairless.methods import registry

PathLike = str | os.PathLike


def fit(
    method: str,
    images,
    *,
    out: PathLike,
    clean=None,
    axes: str | None = None,
    profile: str = "quick",
    config: Config | Mapping | PathLike | None = None,
    seed: int = 0,
    resume: bool | None = None,
    devices: int = 1,
    progress: bool = True,
    callbacks: Sequence = (),
    options: Mapping | None = None,
    echo: Callable[[str], None] | None = None,
    **settings,
) -> Denoiser | None:
    """Train ``method`` into the model folder ``out`` and return its denoiser.

    ``images`` are the noisy images: arrays (with ``axes``, default YX for 2D) or image files (their axes
    from the files, or ``axes``); for a method trained on pairs of acquisitions, consecutive images form
    the pairs (A1, A2, B1, B2, ...).  An unpaired or supervised method also takes ``clean``; both may be
    folders (supervised pairs are matched by file name).  Settings come from ``profile``, then ``config``
    (a config object, a mapping or a YAML file), then ``settings`` (e.g. ``ndim=3``, ``norm="bin"``).
    ``resume``: ``True`` continues an interrupted run in ``out``, ``None`` only an unfinished one.
    ``devices`` > 1 trains data-parallel (see the README); the processes other than the first return
    ``None``.  ``options`` are the method's training extras (ISCL: ``monitor_pairs``); ``echo`` receives
    a line saying what is trained.
    """
    from pairless.config import read_yaml

    spec = registry.get(method, kinds=registry.LEARNED)
    if isinstance(config, (str, os.PathLike)):
        config = read_yaml(config)
    method_config = spec.configure(profile, config, **settings)
    if spec.kind in ("unpaired", "supervised"):
        noisy, clean_set, what = _two_sets(spec.kind, images, clean)
        axes = None
    else:
        views = spec.implementation().views
        noisy, axes = _noisy_images(images, axes=axes, views=views, method=method)
        clean_set, what = None, f"{len(noisy)} {'pair(s)' if views > 1 else 'image(s)'}, axes {axes}"
    if echo is not None:
        echo(f"training {method} ({profile}, {method_config.steps} steps) on {what}")
    return spec.fit(
        noisy,
        clean=clean_set,
        out=out,
        config=method_config,
        axes=axes,
        seed=seed,
        progress=progress,
        resume=resume,
        devices=devices,
        callbacks=callbacks,
        **(options or {}),
    )


def _noisy_images(images, *, axes: str | None, views: int, method: str) -> tuple[list, str]:
    """The training images as arrays with one axes string (pairs grouped as tuples for ``views`` 2)."""
    from pairless.io import read_image

    items = [images] if isinstance(images, (np.ndarray, str, os.PathLike)) else list(images)
    if views > 1 and items and all(isinstance(i, tuple) for i in items):  # already pairs of arrays
        return items, axes or _array_axes(items[0][0])
    if views > 1 and len(items) % views:
        raise PairlessError(
            f"{method} trains on pairs but {len(items)} images were given; pass them as pairs of independent "
            "acquisitions of one object: --pairs A1 A2 [B1 B2 ...]"
        )
    if items and all(isinstance(i, (str, os.PathLike)) for i in items):
        read = [read_image(p, axes=axes) for p in items]
        if len({im.axes for im in read}) > 1:
            raise PairlessError(
                f"the inputs have different axes ({', '.join(sorted({im.axes for im in read}))}); "
                "train on images of one kind, or pass --axes"
            )
        data, axes = [im.data for im in read], read[0].axes
    else:
        data = items
        axes = axes or (_array_axes(items[0]) if items else "YX")
    if views > 1:
        data = [tuple(data[i : i + views]) for i in range(0, len(data), views)]
    return data, axes


def _two_sets(kind: str, noisy, clean) -> tuple[list, list, str]:
    """The noisy and clean 2D images of an unpaired or supervised method, from folders or arrays."""
    from pairless.io.folders import read_pairs, read_slices

    if clean is None:
        raise PairlessError(f"an {kind} method needs a clean set as well; pass --clean DIR (clean=...)")
    folders = isinstance(noisy, (str, os.PathLike)) and isinstance(clean, (str, os.PathLike))
    if kind == "supervised":
        if folders:
            noisy, clean, names = read_pairs(Path(noisy), Path(clean))
            return noisy, clean, f"{len(noisy)} pairs ({len(names)} files)"
        return list(noisy), list(clean), f"{len(noisy)} pairs"
    if folders:
        noisy, clean = read_slices(Path(noisy), "noisy"), read_slices(Path(clean), "clean")
    return list(noisy), list(clean), f"{len(noisy)} noisy and {len(clean)} clean images"


def _array_axes(array: np.ndarray) -> str:
    if np.ndim(array) == 2:
        return "YX"
    raise PairlessError(
        f"a {np.ndim(array)}D array needs its axes named; pass axes=, e.g. 'ZYX' for a volume or 'SYX' for a"
        " stack"
    )


def load(
    source: PathLike | str,
    *,
    tile: int | None = None,
    overlap: int = 32,
    tta: bool = False,
    engine: str = "torch",
    sigma: float | None = None,
    size: int | None = None,
    auto: bool = False,
    vst: bool = False,
) -> Denoiser:
    """A denoiser: a classical filter by name (``gaussian``, ``median``, ``nlm``, ``bm3d``; ``sigma``,
    ``size``,
    ``auto`` and ``vst`` are its settings), a model folder, or a BioImage Model Zoo package (``.zip``: read,
    never run).  ``tile``, ``overlap``, ``tta`` and ``engine`` (torch, onnxruntime, openvino, auto) are how a
    learned model runs.  A folder a run is still training into serves its last complete model (said on
    stderr).
    """
    from pairless.inference.engines import EngineDenoiser, check_engine
    from pairless.inference.tiling import DEFAULT_TILE

    check_engine(engine)  # an unknown or uninstalled engine fails before anything is loaded or written
    if registry.is_method(str(source), "classical"):
        from pairless.methods.classical import make_classical

        denoiser = make_classical(str(source), sigma=sigma, size=size, auto=auto, vst=vst)
        denoiser.provenance = {"method": str(source)}  # the engine is for learned models; filters ignore it
        return denoiser
    path = Path(source)
    if not path.exists():
        raise PairlessError(
            f"unknown method {str(source)!r}: it is neither a classical method"
            f" ({', '.join(registry.names('classical'))}) nor an existing model folder or BMZ package (.zip);"
            " check the spelling or train a model with `pairless fit`"
        )
    if vst:
        raise PairlessError(
            "--vst is for the classical filters nlm and bm3d, not a trained model; drop --vst"
        )
    tile = DEFAULT_TILE if tile is None else tile
    if path.is_file():  # a BioImage Model Zoo package (.zip): read, never run
        from pairless.bmz import load_bmz

        denoiser, provenance = (
            load_bmz(path, tile=tile, overlap=overlap, tta=tta),
            {"method": "bmz", "model": str(source)},
        )
    else:
        from pairless.config import read_yaml
        from pairless.training.lock import training_holder
        from pairless.training.modelio import CONFIG_FILE, model_summary

        running = training_holder(path)
        denoiser = registry.load_model(path, tile=tile, overlap=overlap, tta=tta)
        provenance = {"method": read_yaml(path / CONFIG_FILE).get("method"), "model": str(path.resolve())}
        if running is not None:
            print(
                f"note: {source} is being trained by {running.describe()}; using its last complete model "
                f"({model_summary(path)})",
                file=sys.stderr,
            )
    if engine != "torch":
        denoiser = EngineDenoiser(denoiser, engine)
    denoiser.provenance = {**provenance, "engine": engine}
    return denoiser


def denoise(
    images,
    model: Denoiser | PathLike | str,
    *,
    out: PathLike | None = None,
    axes: str | None = None,
    sigma: float | None = None,
    keep_going: bool = False,
    block: int = 128,
    halo: int = 32,
    progress: bool | None = None,
    echo: Callable[[str], None] = print,
    **load_options,
):
    """Denoise an array (returns the denoised float32 array) or image files (each into ``out/<its name>``;
    returns the written paths) with ``model``: a denoiser, or what :func:`load` takes (with ``load_options``).

    Files are checked from their headers first and written all together at the end (or, with
    ``keep_going``, those that worked); ``.zarr`` volumes are denoised block by block (``block``, ``halo``).
    """
    denoiser = load(model, **load_options) if isinstance(model, (str, os.PathLike)) else model
    if isinstance(images, np.ndarray):
        from pairless.denoiser import denoise_array

        if out is not None:
            raise PairlessError("out= is for denoising files; an array's result is returned, not written")
        return denoise_array(images, denoiser, axes=axes or _array_axes(images), sigma=sigma)
    from pairless.inference.stream import denoise_files

    if out is None:
        raise PairlessError("denoising files needs an output folder; pass --out DIR (out=...)")
    paths = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    return denoise_files(
        paths,
        out,
        denoiser,
        axes=axes,
        keep_going=keep_going,
        block=block,
        halo=halo,
        progress=progress,
        echo=echo,
    )


def evaluate(
    images,
    *,
    reference=None,
    data_range: float | None = None,
    mask=None,
    normalization: str = "euclidean",
    gaussian_ssim: bool = False,
    phantom: str | None = None,
    sphere_activity: float | None = None,
    background_activity: float | None = None,
    voxel_size: Sequence[float] | None = None,
    progress: bool | None = None,
) -> list[dict]:
    """Score images against a ``reference`` (PSNR, NRMSE, SSIM, SI-PSNR) and/or, with ``phantom="nema"``, by
    their NEMA IQ sphere recovery coefficients; one JSON-ready dict per image, conventions included.

    ``images`` are files (``reference`` and ``mask`` then files too) or a mapping of names to arrays
    (``reference`` an array; ``voxel_size`` in mm for the phantom).
    """
    from pairless.metrics.evaluate import evaluate_images, score_image

    if not isinstance(images, Mapping):
        return evaluate_images(
            [Path(p) for p in images],
            reference=reference,
            data_range=data_range,
            mask=mask,
            normalization=normalization,
            gaussian_ssim=gaussian_ssim,
            phantom=phantom,
            sphere_activity=sphere_activity,
            background_activity=background_activity,
            progress=progress,
        )
    if reference is None and phantom is None:
        raise PairlessError("nothing to compare with; pass a reference and/or phantom='nema'")
    nema = None
    if phantom is not None:
        if voxel_size is None or sphere_activity is None:
            raise PairlessError(
                "NEMA evaluation of arrays needs voxel_size (mm) and sphere_activity; pass both"
            )
        nema = {
            "voxel_size": tuple(voxel_size),
            "sphere_activity": sphere_activity,
            "background_activity": background_activity,
        }
    ref = None if reference is None else np.asarray(reference, dtype=np.float32)
    return [
        score_image(
            np.asarray(image, dtype=np.float32),
            name=name,
            reference=ref,
            data_range=data_range,
            mask=mask,
            normalization=normalization,
            gaussian_ssim=gaussian_ssim,
            nema=nema,
        )
        for name, image in images.items()
    ]


def export(model: PathLike, out: PathLike, *, sample: np.ndarray | PathLike | None = None, **options) -> Path:
    """Write the model folder ``model`` as a BioImage Model Zoo package ``out`` (``.zip``).  ``sample`` (an
    array or
    an image file) gives the test tensors and the cover; ``options`` as :func:`pairless.bmz.export_bmz` takes
    them (``name``, ``authors``, ``license``, ``formats``)."""
    from pairless.bmz import export_bmz

    if isinstance(sample, (str, os.PathLike)):
        from pairless.io import read_image

        sample = read_image(sample).data
    return export_bmz(model, out, sample=sample, **options)
