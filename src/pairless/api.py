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
from pairless.io.limits import with_max_pixels
from pairless.methods import registry

PathLike = str | os.PathLike


@with_max_pixels
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
    overwrite: bool = False,
    max_pixels: int | None = None,
    devices: int = 1,
    progress: bool = True,
    callbacks: Sequence = (),
    options: Mapping | None = None,
    echo: Callable[[str], None] | None = None,
    **settings,
) -> Denoiser | None:
    """Train ``method`` into the model folder ``out`` and return its denoiser.

    ``images`` are the noisy images: arrays (with ``axes``, default YX for 2D) or image files (their axes from
    the files, or ``axes``); for a method trained on pairs of acquisitions, consecutive images form the pairs
    (A1, A2, B1, B2, ...).  An unpaired or supervised method also takes ``clean``; both may be folders
    (supervised pairs are matched by file name).  Settings come from ``profile``, then ``config`` (a config
    object, a mapping or a YAML file), then ``settings`` (e.g. ``ndim=3``, ``norm="bin"``). ``resume``:
    ``True`` continues an interrupted run in ``out``, ``None`` only an unfinished one of the same data and
    settings.  A model already in ``out`` is replaced only with ``overwrite``; a folder that holds anything
    else is never trained into, and the input files are never written.  ``devices`` > 1 trains data-parallel
    (see the README); the processes other than the first return ``None``.  ``options`` are the method's
    training extras (ISCL: ``monitor_pairs``); ``echo`` receives a line saying what is trained.
    ``max_pixels``: the most values an image file may state in its header (default 2**30, see
    :mod:`pairless.io.limits`); a larger one is refused before it is read.
    """
    from pairless.config import read_yaml
    from pairless.io.files import guarded_run

    spec = registry.get(method, kinds=registry.LEARNED)
    sources = _paths(images, clean, config)
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
    with guarded_run(inputs=sources, owned=[out], overwrite=overwrite):
        return spec.fit(
            noisy,
            clean=clean_set,
            out=out,
            config=method_config,
            axes=axes,
            seed=seed,
            progress=progress,
            resume=resume,
            overwrite=overwrite,
            devices=devices,
            callbacks=callbacks,
            **(options or {}),
        )


def pretrain(
    data: Mapping[str, PathLike],
    *,
    out: PathLike,
    profile: str = "quick",
    config: Config | Mapping | PathLike | None = None,
    init: str | None = None,
    seed: int = 0,
    resume: bool | None = None,
    overwrite: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    **settings,
) -> Denoiser:
    """Train a prior (:mod:`pairless.methods.prior.recipe`) on clean images with synthetic noise into the
    model folder ``out`` and return it as a zero-shot denoiser.

    ``data`` maps the recipe's data sets (``natural``, ``fluorescence``, ``em``) to folders of clean 8- or
    16-bit images laid out as the recipe reads them (:data:`~pairless.methods.prior.recipe.DATASETS`).
    Settings come from ``profile`` (``quick``, ``release``), ``config`` and ``settings``, as in :func:`fit`.
    ``init="shipped"`` starts from the shipped prior's weights.  A run is resumable (``resume``), and the same
    command with more ``steps`` continues a finished one, so training time adds up across runs.
    """
    from pairless.config import read_yaml
    from pairless.io.files import guarded_run
    from pairless.methods.prior import CONFIG, load
    from pairless.methods.prior import pretrain as train_prior

    if isinstance(config, (str, os.PathLike)):
        config = read_yaml(config)
    prior_config = registry.get("prior").configure(profile, config, **settings)
    if init not in (None, "shipped"):
        raise PairlessError(
            f"--init {init!r}: a prior starts from scratch or from the shipped one (--init shipped)"
        )
    weights = None
    if init == "shipped":
        from pairless.methods.prior.shipped import load_shipped

        shipped_config, weights = load_shipped()
        shipped = CONFIG.from_dict(shipped_config["prior"])
        if (shipped.widths, shipped.blocks) != (prior_config.widths, prior_config.blocks):
            raise PairlessError(
                f"--init shipped needs the shipped network (widths {list(shipped.widths)}, blocks"
                f" {shipped.blocks}); drop --init or those settings"
            )
    if echo is not None:
        echo(f"pretraining the prior ({profile}, {prior_config.steps} steps) on {', '.join(sorted(data))}")
    roots = {name: Path(folder) for name, folder in data.items()}
    with guarded_run(inputs=list(roots.values()), owned=[out], overwrite=overwrite):
        written = train_prior(
            roots,
            config=prior_config,
            out=Path(out),
            seed=seed,
            init=weights,
            progress=progress,
            resume=resume,
            overwrite=overwrite,
        )
    return load(*written)


def _paths(*given) -> list[Path]:
    """The files and folders among ``given`` (a path, or a list of them): the run's inputs, never written."""
    found = []
    for item in given:
        for entry in item if isinstance(item, (list, tuple)) else [item]:
            if isinstance(entry, (str, os.PathLike)):
                found.append(Path(entry))
    return found


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
    vst: bool | str = False,
    psd=None,
    psd_noisy=None,
    psd_clean=None,
    noise: str | None = None,
    adapt: float | None = None,
    seed: int = 0,
) -> Denoiser:
    """A denoiser: a classical filter by name (``gaussian``, ``median``, ``nlm``, ``bm3d``; ``sigma``,
    ``size``, ``auto`` and ``vst`` are its settings), ``"prior"`` (the prior that ships with pairless), a
    model folder, or a BioImage Model Zoo package (``.zip``: read, never run).  ``psd`` (bm3d): the correlated
    noise's spectrum, ``"auto"`` to estimate it from ``psd_noisy`` (the images to denoise) and ``psd_clean``
    (an unpaired clean set; without it, from the noisy images' flat background), see
    :func:`pairless.methods.classical.noise_model`.  ``tile``, ``overlap``, ``tta`` and ``engine`` (torch,
    onnxruntime, openvino, auto) are how a learned model runs.  The prior (or a ``pairless pretrain`` folder)
    takes ``noise`` (``poisson-gaussian`` or ``gaussian``: the model fitted per image), ``sigma`` (a Gaussian
    σ instead), ``vst`` (``"gat"``, the default, ``"none"``: a σ map, or ``"learned"``) and ``adapt`` (seconds
    of test-time adaptation per image), see :class:`pairless.methods.prior.PriorDenoiser`. A folder a run is
    still training into serves its last complete model (said on stderr).
    """
    from pairless.inference.engines import EngineDenoiser, check_engine
    from pairless.inference.tiling import DEFAULT_TILE

    check_engine(engine)  # an unknown or uninstalled engine fails before anything is loaded or written
    prior_options = _prior_options(source, noise=noise, vst=vst, adapt=adapt, sigma=sigma, seed=seed)
    if prior_options is None:
        vst = _filter_vst(vst)
    if registry.is_method(str(source), "pretrained"):
        from pairless.methods import prior
        from pairless.methods.prior.shipped import load_shipped

        tile = DEFAULT_TILE if tile is None else tile
        denoiser = prior.load(*load_shipped(), tile=tile, overlap=overlap, tta=tta, **prior_options)
        if engine != "torch":
            denoiser = EngineDenoiser(denoiser, engine)
        denoiser.provenance = {"method": "prior", "model": "shipped", "engine": engine}
        denoiser.loader = _loader(source, tile=tile, overlap=overlap, tta=tta, engine=engine, **prior_options)
        return denoiser
    if registry.is_method(str(source), "classical"):
        from pairless.methods.classical import make_classical, noise_model

        psd = noise_model(str(source), psd, noisy=psd_noisy, clean=psd_clean, sigma=sigma, auto=auto, vst=vst)
        denoiser = make_classical(str(source), sigma=sigma, size=size, auto=auto, vst=vst, psd=psd)
        denoiser.provenance = {"method": str(source)}  # the engine is for learned models; filters ignore it
        # the estimated PSD travels with the loader: workers do not estimate it again
        denoiser.loader = _loader(source, sigma=sigma, size=size, auto=auto, vst=vst, psd=psd)
        return denoiser
    path = Path(source)
    if not path.exists():
        raise PairlessError(
            f"unknown method {str(source)!r}: it is neither a classical method"
            f" ({', '.join(registry.names('classical'))}) nor an existing model folder or BMZ package (.zip);"
            " check the spelling or train a model with `pairless fit`"
        )
    if vst and prior_options is None:
        raise PairlessError(
            "--vst is for the classical filters nlm and bm3d and the prior, not a trained model; drop --vst"
        )
    if psd is not None or psd_clean is not None:
        raise PairlessError("--psd and --psd-clean are for the classical filter bm3d, not a trained model")
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
        denoiser = registry.load_model(path, tile=tile, overlap=overlap, tta=tta, **(prior_options or {}))
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
    denoiser.loader = _loader(
        source, tile=tile, overlap=overlap, tta=tta, engine=engine, **(prior_options or {})
    )
    return denoiser


def _prior_options(source, *, noise, vst, adapt, sigma, seed) -> dict | None:
    """The prior's own settings when ``source`` is the prior or a ``pairless pretrain`` folder, else ``None``
    (after refusing those settings for any other denoiser)."""
    is_prior = registry.is_method(str(source), "pretrained")
    if not is_prior and not registry.is_method(str(source), "classical") and Path(source).is_dir():
        from pairless.config import read_yaml
        from pairless.training.modelio import CONFIG_FILE

        config = Path(source) / CONFIG_FILE
        is_prior = config.is_file() and registry.is_method(str(read_yaml(config).get("method")), "pretrained")
    if not is_prior:
        if noise is not None or adapt is not None:
            raise PairlessError(
                f"--noise and --adapt are for the prior (`pairless denoise prior`), not {source}; drop them"
            )
        return None
    vst = {True: "gat", False: "gat"}.get(vst, vst)
    return {"noise": noise or "poisson-gaussian", "vst": vst, "adapt": adapt, "sigma": sigma, "seed": seed}


def _filter_vst(vst: bool | str) -> bool:
    """A classical filter's ``vst``: a bool, or ``"gat"`` (the generalized Anscombe transform it applies)."""
    if vst in (True, False):
        return bool(vst)
    if vst == "gat":
        return True
    raise PairlessError(
        f"--vst {vst} is for the prior (`pairless denoise prior --vst {vst}`); filters take --vst"
    )


def _loader(source: PathLike | str, **options):
    """How another process loads this denoiser again (the workers of ``denoise(..., scheduler=...)``): a
    ``functools.partial`` of :func:`load` that pickles by reference, never the model itself."""
    import functools

    is_path = not registry.is_method(str(source), "classical")
    return functools.partial(load, os.path.abspath(source) if is_path else str(source), **options)


@with_max_pixels
def denoise(
    images,
    model: Denoiser | PathLike | str,
    *,
    out: PathLike | None = None,
    axes: str | None = None,
    sigma: float | None = None,
    keep_going: bool = False,
    overwrite: bool = False,
    max_pixels: int | None = None,
    block: int = 128,
    halo: int = 32,
    scheduler=None,
    resume: bool = False,
    progress: bool | None = None,
    echo: Callable[[str], None] = print,
    **load_options,
):
    """Denoise an array (returns the denoised float32 array) or image files (each into ``out/<its name>``;
    returns the written paths) with ``model``: a denoiser, or what :func:`load` takes (with ``load_options``).

    Files are checked from their headers first and written all together at the end (or, with
    ``keep_going``, those that worked); ``.zarr`` volumes are denoised block by block (``block``, ``halo``).
    A file already in ``out`` is replaced only with ``overwrite``; an input never.  ``max_pixels``: the most
    values an image file may state (default 2**30, see :mod:`pairless.io.limits`; ``.zarr`` has no limit).
    ``scheduler`` (``local[:N]``, ``tcp://HOST:PORT``, a scheduler file, a ``distributed.Client``) denoises
    ``.zarr`` volumes on a Dask cluster (:mod:`pairless.inference.distributed`); ``resume`` continues such a
    run that was interrupted.
    """
    if load_options.get("psd") == "auto" and load_options.get("psd_noisy") is None:
        load_options["psd_noisy"] = images  # the noise spectrum of the images being denoised
    denoiser = load(model, **load_options) if isinstance(model, (str, os.PathLike)) else model
    if scheduler is not None or resume:
        return _denoise_on_cluster(
            images,
            denoiser,
            out=out,
            scheduler=scheduler,
            resume=resume,
            overwrite=overwrite,
            axes=axes,
            sigma=sigma,
            block=block,
            halo=halo,
            progress=progress,
            echo=echo,
        )
    if isinstance(images, np.ndarray):
        from pairless.denoiser import denoise_array

        if out is not None:
            raise PairlessError("out= is for denoising files; an array's result is returned, not written")
        return denoise_array(images, denoiser, axes=axes or _array_axes(images), sigma=sigma)
    from pairless.inference.stream import denoise_files
    from pairless.io.files import guarded_run

    if out is None:
        raise PairlessError("denoising files needs an output folder; pass --out DIR (out=...)")
    paths = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    with guarded_run(inputs=_paths(paths, model), outputs=[out], overwrite=overwrite):
        return denoise_files(
            paths,
            out,
            denoiser,
            axes=axes,
            keep_going=keep_going,
            overwrite=overwrite,
            block=block,
            halo=halo,
            progress=progress,
            echo=echo,
        )


def _denoise_on_cluster(images, denoiser, *, out, scheduler, resume, overwrite, progress, **options):
    """``.zarr`` volumes on a Dask cluster whose workers load the model from the recipe :func:`load` gave it,
    keyed by the SHA-256 of its weights file (a model folder's, or the BMZ package)."""
    import hashlib

    from pairless.inference.distributed import denoise_volumes
    from pairless.io.files import guarded_run
    from pairless.training.modelio import WEIGHTS_FILE

    if scheduler is None:
        raise PairlessError("resume= continues a run on a Dask cluster; pass scheduler= too (--scheduler)")
    if getattr(denoiser, "loader", None) is None:
        raise PairlessError(
            "a cluster's workers load the model themselves; pass the model folder, BMZ package or filter name"
            " (or a denoiser from pairless.load), not a denoiser built in memory"
        )
    if out is None or isinstance(images, np.ndarray):
        raise PairlessError("a Dask cluster denoises .zarr volumes into a folder; pass .zarr paths and out=")
    paths = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    model, key = (denoiser.provenance or {}).get("model"), None
    if model is not None:
        weights = Path(model) / WEIGHTS_FILE if Path(model).is_dir() else Path(model)
        key = hashlib.sha256(weights.read_bytes()).hexdigest()
    with guarded_run(inputs=_paths(paths, model), outputs=[out], overwrite=overwrite):
        return denoise_volumes(
            paths,
            out,
            denoiser.loader,
            scheduler=scheduler,
            model_key=key,
            resume=resume,
            progress=sys.stderr.isatty() if progress is None else progress,
            **options,
        )


@with_max_pixels
def evaluate(
    images,
    *,
    reference=None,
    data_range: float | None = None,
    mask=None,
    normalization: str = "euclidean",
    gaussian_ssim: bool = False,
    metrics: Sequence[str] | None = None,
    phantom: str | None = None,
    sphere_activity: float | None = None,
    background_activity: float | None = None,
    units: str | None = None,
    activity_units: str = "kBq/mL",
    voxel_size: Sequence[float] | None = None,
    json: PathLike | None = None,
    overwrite: bool = False,
    max_pixels: int | None = None,
    progress: bool | None = None,
) -> list[dict]:
    """Score images against a ``reference`` (``metrics``: PSNR, NRMSE, SSIM, SI-PSNR by default) and/or, with
    ``phantom="nema"``, by
    their NEMA IQ sphere recovery coefficients; one JSON-ready dict per image, conventions included.

    ``images`` are files (``reference`` and ``mask`` then files too) or a mapping of names to arrays
    (``reference`` an array; ``voxel_size`` in mm for the phantom).  The phantom's activities are in
    ``activity_units`` (``kBq/mL``, ``Bq/mL``, ``g/mL`` for SUVbw, ``image`` for the image's own units)
    and converted to the image's units: those of the file (DICOM Units, a pairless NIfTI) or ``units``
    (arrays have none).  ``json``: also write the rows there
    (strict JSON; an existing file is replaced only with ``overwrite``, an input never).  ``max_pixels``: the
    most values an image file may state (default 2**30, see :mod:`pairless.io.limits`).
    """
    from pairless.io.files import check_file_target, guarded_run
    from pairless.metrics.evaluate import evaluate_images, score_image, write_json
    from pairless.metrics.image import METRICS

    metrics = METRICS if metrics is None else tuple(metrics)

    if not isinstance(images, Mapping):
        files = [Path(p) for p in images]
        with guarded_run(
            inputs=_paths(files, reference, mask), outputs=[json] if json else [], overwrite=overwrite
        ):
            if json is not None:
                check_file_target(json)  # before any image is scored
            rows = evaluate_images(
                files,
                reference=reference,
                data_range=data_range,
                mask=mask,
                normalization=normalization,
                gaussian_ssim=gaussian_ssim,
                metrics=metrics,
                phantom=phantom,
                sphere_activity=sphere_activity,
                background_activity=background_activity,
                units=units,
                activity_units=activity_units,
                progress=progress,
            )
            if json is not None:
                write_json(json, rows)
        return rows
    if reference is None and phantom is None:
        raise PairlessError("nothing to compare with; pass a reference and/or phantom='nema'")
    nema = None
    if phantom is not None:
        if voxel_size is None or sphere_activity is None:
            raise PairlessError(
                "NEMA evaluation of arrays needs voxel_size (mm) and sphere_activity; pass both"
            )
        from pairless.metrics.units import nema_activities

        activities = nema_activities(
            None,
            name="the array",
            sphere_activity=sphere_activity,
            background_activity=background_activity,
            units=units,
            activity_units=activity_units,
        )
        nema = {"voxel_size": tuple(voxel_size), **activities}
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
            metrics=metrics,
            nema=nema,
        )
        for name, image in images.items()
    ]


def export(
    model: PathLike,
    out: PathLike,
    *,
    sample: np.ndarray | PathLike | None = None,
    overwrite: bool = False,
    **options,
) -> Path:
    """Write the model folder ``model`` as a BioImage Model Zoo package ``out`` (``.zip``).  ``sample`` (an
    array or an image file) gives the test tensors and the cover; ``options`` as
    :func:`pairless.bmz.export_bmz` takes them (``name``, ``authors``, ``license``, ``formats``).  An
    existing ``out`` is replaced only with ``overwrite``."""
    from pairless.bmz import export_bmz
    from pairless.io.files import check_file_target, guarded_run

    with guarded_run(inputs=_paths(model, sample), outputs=[out], overwrite=overwrite):
        check_file_target(out)  # before the export's work
        if isinstance(sample, (str, os.PathLike)):
            from pairless.io import read_image

            sample = read_image(sample).data
        return export_bmz(model, out, sample=sample, **options)
