"""Export: a model folder as a bioimage.io spec 0.5 package."""

from __future__ import annotations

import datetime
import functools
import inspect
import io
import json
import math
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pairless import __version__
from pairless.bmz.package import (
    FORMAT_VERSION,
    INPUT_ID,
    MAX_HALO,
    OUTPUT_ID,
    Normalisation,
    PackagedDenoiser,
    _check_state_shapes,
    _json_value,
    _sha256,
    architectures,
)
from pairless.denoiser import Denoiser
from pairless.errors import PairlessError


def _parts(denoiser: Denoiser, config: dict) -> tuple[nn.Module, Normalisation]:
    """The network and normalisation of a folder's denoiser, for the methods whose denoiser is just that."""
    net = getattr(denoiser, "net", None)
    if not isinstance(net, nn.Module):
        raise PairlessError(
            f"method {config.get('method')!r} cannot be exported to the BioImage Model Zoo: its denoiser is"
            " not one network between a normalisation and its inverse (ISCL combines two networks); export"
            " an N2V, self-supervised or supervised model instead"
        )
    if isinstance(config.get("normalisation"), dict):
        mean, std = float(config["normalisation"]["mean"]), float(config["normalisation"]["std"])
        return net, Normalisation(mean, std, std, mean)
    if "value_range" in config:  # supervised DnCNN / RED-CNN: [lo, hi] -> [0, 1]
        lo, hi = (float(v) for v in config["value_range"])
        return net, Normalisation(lo, hi - lo, hi - lo, lo)
    raise PairlessError(
        f"method {config.get('method')!r} keeps no normalisation pairless can write into a BMZ package "
        "(config.yaml has neither 'normalisation' nor 'value_range'); this model cannot be exported"
    )


def _constructor_kwargs(net: nn.Module, rebuild) -> dict:
    """The keyword arguments ``type(net)`` was built with, recorded while ``rebuild()`` builds it again.

    ``rebuild`` is the method's own loader, so the kwargs are exactly what it passes; they are then
    checked by building the class from them and comparing every parameter and buffer shape.
    """
    cls = type(net)
    if cls.__name__ not in architectures() or architectures()[cls.__name__] is not cls:
        raise PairlessError(
            f"the network {cls.__module__}.{cls.__name__} is not one of pairless.nets' networks, so a package"
            " could not be read back; this model cannot be exported to the BioImage Model Zoo"
        )
    original = cls.__init__
    calls: list[dict] = []

    @functools.wraps(original)
    def recording(self, *args, **kwargs):
        if not calls:
            bound = inspect.signature(original).bind(self, *args, **kwargs)
            bound.apply_defaults()
            calls.append({k: v for k, v in bound.arguments.items() if k != "self"})
        original(self, *args, **kwargs)

    own = "__init__" in cls.__dict__
    cls.__init__ = recording
    try:
        rebuild()
    finally:
        if own:
            cls.__init__ = original
        else:
            del cls.__init__
    if not calls:
        raise PairlessError(f"could not find how {cls.__name__} is built; this model cannot be exported")
    kwargs = calls[0]
    if not all(_json_value(v) for v in kwargs.values()):
        raise PairlessError(
            f"{cls.__name__} is built from non-scalar arguments ({sorted(kwargs)}), which a BMZ package"
            " cannot describe; this model cannot be exported"
        )
    kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}
    _check_state_shapes(cls(**kwargs), net.state_dict(), cls.__name__)
    return kwargs


def _measured_reach(net: nn.Module, *, ndim: int, multiple: int) -> int:
    """How far (pixels) one input pixel changes the output: an impulse on a flat image, fp32, untiled."""
    size = 128 if ndim == 2 else 48
    size = math.ceil(size / multiple) * multiple
    runner = net.eval().float()
    flat = torch.zeros((1, 1) + (size,) * ndim)
    impulse = flat.clone()
    centre = size // 2
    impulse[(0, 0) + (centre,) * ndim] = 1.0
    with torch.no_grad():
        delta = (runner(impulse) - runner(flat)).abs()[0, 0]
    hit = torch.nonzero(delta > 1e-6 * float(delta.max()))
    if len(hit) == 0:
        return 0
    return int((hit - centre).abs().max())


def _smallest(multiple: int, halo: int) -> int:
    """The smallest tile the package allows: a multiple of the network's, larger than twice the halo."""
    return math.ceil((2 * halo + 1) / multiple) * multiple


def _default_sample(norm: Normalisation, *, ndim: int, smallest: int, rng: np.random.Generator) -> np.ndarray:
    """A synthetic test image in the model's intensity units: smooth structure plus noise."""
    shape = tuple(max(s, smallest) for s in ((64, 64) if ndim == 2 else (16, 64, 64)))
    grids = np.meshgrid(*[np.linspace(0, 1, s) for s in shape], indexing="ij")
    y, x = grids[-2], grids[-1]
    signal = np.sin(7 * x) * np.cos(5 * y) + 0.6 * ((x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.08)
    noisy = signal + 0.5 * rng.standard_normal(shape)
    return (norm.in_offset + norm.in_scale * noisy).astype(np.float32)


def _crop_to_multiple(image: np.ndarray, multiple: int, smallest: int) -> np.ndarray:
    """The largest centred crop whose sides are multiples of ``multiple`` (at most 256 pixels a side)."""
    if min(image.shape) < smallest:
        raise PairlessError(
            f"the sample image {image.shape} is smaller than the package's smallest tile ({smallest} pixels a"
            f" side: twice the network's reach, in multiples of {multiple}); pass a larger one"
        )
    sides = [max(smallest, min(256, s) // multiple * multiple) for s in image.shape]
    start = [(n - s) // 2 for s, n in zip(sides, image.shape)]
    return np.ascontiguousarray(image[tuple(slice(a, a + s) for a, s in zip(start, sides))])


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _cover_png(noisy: np.ndarray, denoised: np.ndarray) -> bytes:
    """Input | output side by side (2:1, as bioimage.io shows covers), one shared grey scale."""
    from PIL import Image

    if noisy.ndim == 3:  # a volume: its middle plane
        noisy, denoised = noisy[len(noisy) // 2], denoised[len(denoised) // 2]
    lo, hi = np.percentile(noisy, [1, 99])
    scale = 255 / max(hi - lo, 1e-12)
    pair = np.concatenate([noisy, denoised], axis=1)
    grey = np.clip((pair - lo) * scale, 0, 255).astype(np.uint8)
    image = Image.fromarray(grey).resize((512, 256), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _tif_bytes(array: np.ndarray) -> bytes:
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.asarray(array, dtype=np.float32))
    return buffer.getvalue()


def _axes(ndim: int, *, multiple: int, halo: int | None, reach: int = 0) -> list[dict]:
    spatial = list("zyx"[-ndim:])
    smallest = _smallest(multiple, reach)
    axes: list[dict] = [{"type": "batch"}, {"type": "channel", "channel_names": ["intensity"]}]
    for a in spatial:
        if halo is None:  # input: any multiple of the network's multiple, at least big enough for the halo
            axes.append({"type": "space", "id": a, "size": {"min": smallest, "step": multiple}})
        else:
            axes.append(
                {"type": "space", "id": a, "size": {"tensor_id": INPUT_ID, "axis_id": a}, "halo": halo}
            )
    return axes


def _readme(name: str, method: str, config: dict, norm: Normalisation, halo: int, formats: list[str]) -> str:
    settings = {k: v for k, v in config.items() if k not in ("versions",)}
    return f"""# {name}

A **{method}** denoiser trained with [pairless](https://pypi.org/project/pairless/) {__version__}, without
clean/noisy pairs{"" if method != "supervised" else " (supervised reference model)"}.

- Input `{INPUT_ID}`: one-channel images in the training data's intensity units, float32; every spatial size
  that is a multiple of the network's down-sampling factor. Output `{OUTPUT_ID}`: same shape and units.
- Normalisation (in rdf.yaml): `x = (y - {norm.in_offset:.6g}) / {norm.in_scale:.6g}` before the network,
  `out * {norm.out_scale:.6g} + {norm.out_offset:.6g}` after it.
- Tiling: each tile needs a halo of {halo} pixels (the network's measured reach).
- Weights: {", ".join(formats)}.

Denoise with pairless (this reads the weights into pairless's own network; nothing from the package runs):

```bash
pairless denoise PACKAGE.zip image.tif --out denoised/
```

## Validation

pairless checked at export that the network between the two normalisations computes exactly what the pairless
model does, and wrote the test output from the test input (fp32, one tile). Check the package with
`bioimageio test PACKAGE.zip`.

Training settings (pairless `config.yaml`):

```json
{json.dumps(settings, indent=1, default=str)}
```
"""


def export_bmz(
    model: str | os.PathLike,
    out: str | os.PathLike,
    *,
    name: str | None = None,
    description: str | None = None,
    authors: list[str] | None = None,
    license: str = "BSD-3-Clause",
    sample: np.ndarray | None = None,
    formats: tuple[str, ...] = ("pytorch_state_dict", "torchscript", "onnx"),
) -> Path:
    """Write the model folder ``model`` as a bioimage.io spec 0.5 package ``out`` (a ``.zip``).

    ``sample`` is a 2D (3D for a 3D model) image in the model's intensity units used as the test
    input and the cover (a centred crop whose sides fit the network); by default a synthetic image.
    ``formats`` are the weight formats written (``onnx`` needs ``pairless[onnx]``).  The zip is
    written atomically: a failed export leaves nothing at ``out``.
    """
    from pairless.io.files import atomic_path
    from pairless.methods import registry
    from pairless.training.modelio import CONFIG_FILE, read_model_folder

    out = Path(out)
    if out.suffix.lower() != ".zip":
        raise PairlessError(f"the package {str(out)!r} must end in .zip (bioimage.io packages are zip files)")
    unknown = sorted(set(formats) - {"pytorch_state_dict", "torchscript", "onnx"})
    if unknown or "pytorch_state_dict" not in formats:
        raise PairlessError(
            f"weight formats {list(formats)} are not supported; choose among pytorch_state_dict (always"
            " written), torchscript and onnx"
        )
    config, weights = read_model_folder(model, methods=registry.names(*registry.LEARNED))
    spec = registry.get(config["method"])
    denoiser = spec.load(config, weights)
    net, norm = _parts(denoiser, config)
    kwargs = _constructor_kwargs(net, lambda: spec.load(config, weights))
    ndim = int(getattr(denoiser, "spatial_ndim", None) or getattr(net, "ndim", 2))
    multiple = int(getattr(net, "multiple", 1))
    method = str(config["method"])
    name = name or f"pairless {method} denoiser"

    halo = min(MAX_HALO, _measured_reach(net, ndim=ndim, multiple=multiple))
    smallest = _smallest(multiple, halo)
    rng = np.random.default_rng(0)
    image = (
        _default_sample(norm, ndim=ndim, smallest=smallest, rng=rng) if sample is None else np.asarray(sample)
    )
    if image.ndim > ndim:  # a stack or time series: its first image
        image = image[(0,) * (image.ndim - ndim)]
    if image.ndim != ndim:
        raise PairlessError(
            f"the sample image has {image.ndim} dimensions but this is a {ndim}D model; pass a "
            f"{'YX image' if ndim == 2 else 'ZYX volume'}"
        )
    image = _crop_to_multiple(image.astype(np.float32), multiple, smallest)
    if not np.isfinite(image).all():
        raise PairlessError("the sample image has NaN/Inf values; pass a finite image")

    # the package's computation, untiled in fp32 as bioimage.io tools run it ...
    runner = net.eval().float()
    x = torch.from_numpy(image)[None, None]
    with torch.no_grad():
        expected = (runner((x - norm.in_offset) / norm.in_scale) * norm.out_scale + norm.out_offset).numpy()
    # ... and the folder's denoiser must be exactly "normalise, tiled net, de-normalise", else the method does
    # more
    options = {k: getattr(denoiser, k) for k in ("tile", "overlap", "tta") if hasattr(denoiser, k)}
    packaged = PackagedDenoiser(net, norm, spatial_ndim=ndim, multiple=multiple, **options)
    with torch.no_grad():
        reference, ours = denoiser(x).numpy(), packaged(x).numpy()
    scale = max(float(np.abs(reference).max()), 1e-12)
    if reference.shape != ours.shape or float(np.abs(reference - ours).max()) > 1e-5 * scale:
        raise PairlessError(
            f"method {method!r} does more than normalise, run its network and de-normalise, which is all a "
            "BMZ package can describe; this model cannot be exported"
        )
    arch_cls = type(net)
    arch_file = f"{arch_cls.__module__.rsplit('.', 1)[-1]}.py"
    arch_source = Path(inspect.getsourcefile(arch_cls)).read_bytes()
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    files: dict[str, bytes] = {"weights.pt": buffer.getvalue(), arch_file: arch_source}
    weights_rdf: dict = {
        "pytorch_state_dict": {
            "source": "weights.pt",
            "sha256": _sha256(files["weights.pt"]),
            "architecture": {
                "source": arch_file,
                "sha256": _sha256(arch_source),
                "callable": arch_cls.__name__,
                "kwargs": kwargs,
            },
            "pytorch_version": torch.__version__.split("+")[0],
        }
    }
    with tempfile.TemporaryDirectory() as tmp:
        if "torchscript" in formats:
            files["weights_torchscript.pt"] = _torchscript_bytes(runner, x, Path(tmp))
            weights_rdf["torchscript"] = {
                "source": "weights_torchscript.pt",
                "sha256": _sha256(files["weights_torchscript.pt"]),
                "pytorch_version": torch.__version__.split("+")[0],
                "parent": "pytorch_state_dict",
            }
        if "onnx" in formats:
            from pairless.inference.onnx_export import OPSET, export_onnx

            path = export_onnx(
                runner, Path(tmp) / "weights.onnx", example=(x - norm.in_offset) / norm.in_scale
            )
            files["weights.onnx"] = path.read_bytes()
            weights_rdf["onnx"] = {
                "source": "weights.onnx",
                "sha256": _sha256(files["weights.onnx"]),
                "opset_version": OPSET,
                "parent": "pytorch_state_dict",
            }

    files["test_input.npy"] = _npy_bytes(image[None, None].astype(np.float32))
    files["test_output.npy"] = _npy_bytes(expected.astype(np.float32))
    files["sample_input.tif"] = _tif_bytes(image)
    files["sample_output.tif"] = _tif_bytes(expected[0, 0])
    files["cover.png"] = _cover_png(image, expected[0, 0])
    written = [k for k in ("pytorch_state_dict", "torchscript", "onnx") if k in weights_rdf]
    files["README.md"] = _readme(name, method, config, norm, halo, written).encode()
    cites = [*spec.cite(config), *registry.NETWORK_CITATIONS.get(arch_cls.__name__, ())]
    rdf = {
        "format_version": FORMAT_VERSION,
        "type": "model",
        "name": name,
        "description": (
            description or f"Denoises one-channel {ndim}D images; trained with pairless ({method})."
        ),
        "authors": [{"name": a} for a in authors or ["pairless user"]],
        "cite": (
            [{"text": c.text, "doi": c.doi} for c in cites]
            or [
                {
                    "text": "pairless: denoising without clean/noisy pairs.",
                    "url": "https://pypi.org/project/pairless/",
                }
            ]
        ),
        "license": license,
        "tags": ["denoising", "pairless", method, f"{ndim}d", "pytorch"],
        "documentation": "README.md",
        "covers": ["cover.png"],
        "timestamp": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        "inputs": [
            {
                "id": INPUT_ID,
                "description": "noisy image, in the training data's intensity units",
                "axes": _axes(ndim, multiple=multiple, halo=None, reach=halo),
                "test_tensor": {"source": "test_input.npy", "sha256": _sha256(files["test_input.npy"])},
                "sample_tensor": {"source": "sample_input.tif", "sha256": _sha256(files["sample_input.tif"])},
                "data": {"type": "float32"},
                "preprocessing": [
                    {
                        "id": "scale_linear",
                        "kwargs": {"gain": 1.0 / norm.in_scale, "offset": -norm.in_offset / norm.in_scale},
                    }
                ],
            }
        ],
        "outputs": [
            {
                "id": OUTPUT_ID,
                "description": "denoised image, same shape and units as the input",
                "axes": _axes(ndim, multiple=multiple, halo=halo),
                "test_tensor": {"source": "test_output.npy", "sha256": _sha256(files["test_output.npy"])},
                "sample_tensor": {
                    "source": "sample_output.tif",
                    "sha256": _sha256(files["sample_output.tif"]),
                },
                "data": {"type": "float32"},
                "postprocessing": [
                    {"id": "scale_linear", "kwargs": {"gain": norm.out_scale, "offset": norm.out_offset}}
                ],
            }
        ],
        "weights": weights_rdf,
        "config": {
            "pairless": {
                "version": __version__,
                "method": method,
                "normalisation": norm.as_dict(),
                "multiple": multiple,
                "spatial_ndim": ndim,
                "model_config": {k: v for k, v in config.items()},
                "source_folder_config": CONFIG_FILE,
            }
        },
    }
    import yaml

    files = {"rdf.yaml": yaml.safe_dump(rdf, sort_keys=False, allow_unicode=True).encode(), **files}
    with (
        atomic_path(out) as tmp_zip,
        zipfile.ZipFile(tmp_zip, "w", compression=zipfile.ZIP_DEFLATED) as archive,
    ):
        for entry, data in files.items():
            archive.writestr(entry, data)
    return out


def _torchscript_bytes(net: nn.Module, example: torch.Tensor, tmp: Path) -> bytes:
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, example, check_trace=False)
        path = tmp / "weights_torchscript.pt"
        traced.save(str(path))
    return path.read_bytes()
