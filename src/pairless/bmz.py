"""BioImage Model Zoo packages (bioimage.io model spec 0.5): export a pairless model, import one safely.

:func:`export_bmz` turns a model folder into a ``.zip`` the BMZ tools (bioimageio.core, ilastik,
deepImageJ, the napari BMZ plugin) understand: ``rdf.yaml`` with axes and tiling hints (the
spatial sizes the network accepts and a halo equal to its measured reach), the weights three ways
(``pytorch_state_dict`` with the architecture's source file, ``torchscript`` and ``onnx``), a test
input and its expected output, a cover image, a README, citations and a licence.  The export works
for every learned method whose denoiser is "normalise, run ``.net`` tile by tile, de-normalise"
(N2V and the other self-supervised methods, the supervised baselines); it checks this on the test
input and refuses any other.

:func:`load_bmz` reads such a package into a pairless denoiser **without running anything from
it**: the network is pairless's own class, chosen by the package's architecture name and built
from its keyword arguments, and the weights are read with ``torch.load(weights_only=True)`` (or
safetensors), or the package's ONNX file runs in ONNX Runtime.  A package's architecture source and
its TorchScript are never imported or run.  Nothing is written while loading, and a zip with an
absolute or ``..`` entry is refused whole.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import importlib
import inspect
import io
import json
import math
import os
import pkgutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch import nn

from pairless import __version__
from pairless.denoiser import SPATIAL, Denoiser
from pairless.errors import PairlessError
from pairless.predict import DEFAULT_TILE

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
FORMAT_VERSION = "0.5.4"  # the oldest 0.5 release with everything used here: readable by older BMZ tools
INPUT_ID, OUTPUT_ID = "raw", "denoised"
MAX_HALO = 64
MAX_PACKAGE_BYTES = 4 << 30  # uncompressed; refuses zip bombs before anything is decompressed

CITATIONS = {
    "n2v": [(("Krull, Buchholz, Jug. Noise2Void - Learning Denoising from Single Noisy Images. CVPR 2019."),
             "10.1109/CVPR.2019.00223")],
    "n2v2": [(("Höck et al. N2V2 - Fixing Noise2Void Checkerboard Artifacts with Modified Sampling Strategies "
              "and a Tweaked Network Architecture. ECCV Workshops 2022."), "10.1007/978-3-031-25069-9_33")],
    "structn2v": [(("Broaddus, Krull, Weigert, Schmidt, Myers. Removing Structured Noise with Self-Supervised "
                   "Blind-Spot Networks. ISBI 2020."), "10.1109/ISBI45749.2020.9098336")],
    "iscl": [(("Lee, Jeong. ISCL: Interdependent Self-Cooperative Learning for Unpaired Image Denoising. "
              "IEEE TMI 2021."), "10.1109/TMI.2021.3096142")],
    "ne2ne": [(("Huang, Li, Jia, Lu, Liu. Neighbor2Neighbor: Self-Supervised Denoising from Single Noisy "
               "Images. CVPR 2021."), "10.1109/CVPR46437.2021.01454")],
    "zsn2n": [(("Mansour, Heckel. Zero-Shot Noise2Noise: Efficient Image Denoising without any Data. "
               "CVPR 2023."), "10.1109/CVPR52729.2023.01347")],
    "bsn": [(("Laine, Karras, Lehtinen, Aila. High-Quality Self-Supervised Deep Image Denoising. "
             "NeurIPS 2019."), "10.48550/arXiv.1901.10277")],
    "dncnn": [(("Zhang, Zuo, Chen, Meng, Zhang. Beyond a Gaussian Denoiser: Residual Learning of Deep CNN "
               "for Image Denoising. IEEE TIP 2017."), "10.1109/TIP.2017.2662206")],
    "redcnn": [(("Chen et al. Low-Dose CT With a Residual Encoder-Decoder Convolutional Neural Network. "
                "IEEE TMI 2017."), "10.1109/TMI.2017.2715284")],
    "unet": [(("Ronneberger, Fischer, Brox. U-Net: Convolutional Networks for Biomedical Image Segmentation. "
              "MICCAI 2015."), "10.1007/978-3-319-24574-4_28")],
}


# --------------------------------------------------------------------------------------------------
# What a packaged denoiser is: (y - in_offset) / in_scale -> net -> * out_scale + out_offset


@dataclass(frozen=True)
class Normalisation:
    """``x = (y - in_offset) / in_scale`` before the network, ``out * out_scale + out_offset`` after."""

    in_offset: float
    in_scale: float
    out_scale: float
    out_offset: float

    def as_dict(self) -> dict:
        return {k: float(getattr(self, k)) for k in ("in_offset", "in_scale", "out_scale", "out_offset")}


class PackagedDenoiser(Denoiser):
    """A network with an affine normalisation around it, predicted tile by tile (``pairless.predict``).

    This is the computation of every exportable pairless denoiser, written out once, so a model
    loaded from a package denoises exactly as the model folder it came from.
    """

    def __init__(self, net: nn.Module, norm: Normalisation, *, spatial_ndim: int, multiple: int,
                 tile: int = DEFAULT_TILE, overlap: int = 32, tta: bool = False, precision: str = "auto"):
        super().__init__()
        self.net = net.eval()
        self.norm, self.spatial_ndim, self.multiple = norm, spatial_ndim, multiple
        self.tile, self.overlap, self.tta, self.precision = tile, overlap, tta, precision

    def forward(self, y: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
        from pairless.predict import predict_tiled

        if y.ndim != 2 + self.spatial_ndim:
            raise PairlessError(
                f"this {self.spatial_ndim}D model needs (B, 1, {', '.join(SPATIAL[-self.spatial_ndim:])}) input, "
                f"got shape {tuple(y.shape)}"
            )
        n = self.norm
        x = (y.float() - n.in_offset) / n.in_scale
        with torch.no_grad():
            out = predict_tiled(self.net, x, tile=self.tile, overlap=self.overlap, tta=self.tta,
                                multiple=self.multiple, precision=self.precision)
        return out * n.out_scale + n.out_offset


def _parts(denoiser: Denoiser, config: dict) -> tuple[nn.Module, Normalisation]:
    """The network and normalisation of a folder's denoiser, for the methods whose denoiser is just that."""
    net = getattr(denoiser, "net", None)
    if not isinstance(net, nn.Module):
        raise PairlessError(
            f"method {config.get('method')!r} cannot be exported to the BioImage Model Zoo: its denoiser is not "
            f"one network between a normalisation and its inverse (ISCL combines two networks); export an N2V, "
            f"self-supervised or supervised model instead"
        )
    if isinstance(config.get("normalisation"), dict):
        mean, std = float(config["normalisation"]["mean"]), float(config["normalisation"]["std"])
        return net, Normalisation(mean, std, std, mean)
    if "value_range" in config:  # supervised DnCNN / RED-CNN: [lo, hi] -> [0, 1]
        lo, hi = (float(v) for v in config["value_range"])
        return net, Normalisation(lo, hi - lo, hi - lo, lo)
    raise PairlessError(
        f"method {config.get('method')!r} keeps no normalisation pairless can write into a BMZ package "
        f"(config.yaml has neither 'normalisation' nor 'value_range'); this model cannot be exported"
    )


# --------------------------------------------------------------------------------------------------
# Architectures pairless builds itself: its own network classes, by name and keyword arguments


@functools.cache
def architectures() -> dict[str, type[nn.Module]]:
    """Every network class defined in ``pairless.nets``, by class name (the only ones :func:`load_bmz` builds)."""
    import pairless.nets

    found: dict[str, type[nn.Module]] = {}
    for info in pkgutil.iter_modules(pairless.nets.__path__):
        try:
            module = importlib.import_module(f"pairless.nets.{info.name}")
        except ImportError:  # a network needing an optional package that is not installed
            continue
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, nn.Module) and obj.__module__ == module.__name__
                    and not name.startswith("_")):
                found[name] = obj
    return found


def _json_value(value) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_json_value(v) for v in value)
    return False


def _constructor_kwargs(net: nn.Module, rebuild) -> dict:
    """The keyword arguments ``type(net)`` was built with, recorded while ``rebuild()`` builds it again.

    ``rebuild`` is the method's own loader, so the kwargs are exactly what it passes; they are then
    checked by building the class from them and comparing every parameter and buffer shape.
    """
    cls = type(net)
    if cls.__name__ not in architectures() or architectures()[cls.__name__] is not cls:
        raise PairlessError(
            f"the network {cls.__module__}.{cls.__name__} is not one of pairless.nets' networks, so a package could "
            f"not be read back; this model cannot be exported to the BioImage Model Zoo"
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
            f"{cls.__name__} is built from non-scalar arguments ({sorted(kwargs)}), which a BMZ package cannot "
            f"describe; this model cannot be exported"
        )
    kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}
    _check_state_shapes(cls(**kwargs), net.state_dict(), cls.__name__)
    return kwargs


def _check_state_shapes(net: nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    mine = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in state.items()}
    if mine != theirs:
        missing = sorted(set(mine) ^ set(theirs)) or sorted(k for k in mine if mine[k] != theirs[k])
        raise PairlessError(
            f"the weights do not fit pairless's {name} built from the package's kwargs (first mismatch: "
            f"{missing[0]!r}); the package is damaged or describes another network"
        )


# --------------------------------------------------------------------------------------------------
# Export


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
            f"the sample image {image.shape} is smaller than the package's smallest tile ({smallest} pixels a side: "
            f"twice the network's reach, in multiples of {multiple}); pass a larger one"
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


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _axes(ndim: int, *, multiple: int, halo: int | None, reach: int = 0) -> list[dict]:
    spatial = list("zyx"[-ndim:])
    smallest = _smallest(multiple, reach)
    axes: list[dict] = [{"type": "batch"}, {"type": "channel", "channel_names": ["intensity"]}]
    for a in spatial:
        if halo is None:  # input: any multiple of the network's multiple, at least big enough for the halo
            axes.append({"type": "space", "id": a, "size": {"min": smallest, "step": multiple}})
        else:
            axes.append({"type": "space", "id": a, "size": {"tensor_id": INPUT_ID, "axis_id": a}, "halo": halo})
    return axes


def _readme(name: str, method: str, config: dict, norm: Normalisation, halo: int, formats: list[str]) -> str:
    settings = {k: v for k, v in config.items() if k not in ("versions",)}
    return f"""# {name}

A **{method}** denoiser trained with [pairless](https://pypi.org/project/pairless/) {__version__}, without
clean/noisy pairs{'' if method != 'supervised' else ' (supervised reference model)'}.

- Input `{INPUT_ID}`: one-channel images in the training data's intensity units, float32; every spatial size
  that is a multiple of the network's down-sampling factor. Output `{OUTPUT_ID}`: same shape and units.
- Normalisation (in rdf.yaml): `x = (y - {norm.in_offset:.6g}) / {norm.in_scale:.6g}` before the network,
  `out * {norm.out_scale:.6g} + {norm.out_offset:.6g}` after it.
- Tiling: each tile needs a halo of {halo} pixels (the network's measured reach).
- Weights: {', '.join(formats)}.

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
    from pairless.files import atomic_path
    from pairless.modelio import CONFIG_FILE, LOADERS, read_model_folder

    out = Path(out)
    if out.suffix.lower() != ".zip":
        raise PairlessError(f"the package {str(out)!r} must end in .zip (bioimage.io packages are zip files)")
    unknown = sorted(set(formats) - {"pytorch_state_dict", "torchscript", "onnx"})
    if unknown or "pytorch_state_dict" not in formats:
        raise PairlessError(
            f"weight formats {list(formats)} are not supported; choose among pytorch_state_dict (always written), "
            f"torchscript and onnx"
        )
    config, weights = read_model_folder(model)
    module = importlib.import_module(LOADERS[config["method"]])
    denoiser = module.load_denoiser(config, weights)
    net, norm = _parts(denoiser, config)
    kwargs = _constructor_kwargs(net, lambda: module.load_denoiser(config, weights))
    ndim = int(getattr(denoiser, "spatial_ndim", None) or getattr(net, "ndim", 2))
    multiple = int(getattr(net, "multiple", 1))
    method = str(config["method"])
    name = name or f"pairless {method} denoiser"

    halo = min(MAX_HALO, _measured_reach(net, ndim=ndim, multiple=multiple))
    smallest = _smallest(multiple, halo)
    rng = np.random.default_rng(0)
    image = _default_sample(norm, ndim=ndim, smallest=smallest, rng=rng) if sample is None else np.asarray(sample)
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
    # ... and the folder's denoiser must be exactly "normalise, tiled net, de-normalise", else the method does more
    options = {k: getattr(denoiser, k) for k in ("tile", "overlap", "tta") if hasattr(denoiser, k)}
    packaged = PackagedDenoiser(net, norm, spatial_ndim=ndim, multiple=multiple, **options)
    with torch.no_grad():
        reference, ours = denoiser(x).numpy(), packaged(x).numpy()
    scale = max(float(np.abs(reference).max()), 1e-12)
    if reference.shape != ours.shape or float(np.abs(reference - ours).max()) > 1e-5 * scale:
        raise PairlessError(
            f"method {method!r} does more than normalise, run its network and de-normalise, which is all a "
            f"BMZ package can describe; this model cannot be exported"
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
            from pairless.onnx_export import OPSET, export_onnx

            path = export_onnx(runner, Path(tmp) / "weights.onnx", example=(x - norm.in_offset) / norm.in_scale)
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
    cites = CITATIONS.get(method, [])[:]
    if config.get("n2v2"):
        cites += CITATIONS["n2v2"]
    if config.get("struct_mask", "none") not in (None, "none"):
        cites += CITATIONS["structn2v"]
    arch_key = arch_cls.__name__.lower()
    if arch_key in CITATIONS and arch_key != method:
        cites += CITATIONS[arch_key]
    rdf = {
        "format_version": FORMAT_VERSION,
        "type": "model",
        "name": name,
        "description": description or f"Denoises one-channel {ndim}D images; trained with pairless ({method}).",
        "authors": [{"name": a} for a in (authors or ["pairless user"])],
        "cite": [{"text": text, "doi": doi} for text, doi in cites]
        or [{"text": "pairless: denoising without clean/noisy pairs.", "url": "https://pypi.org/project/pairless/"}],
        "license": license,
        "tags": ["denoising", "pairless", method, f"{ndim}d", "pytorch"],
        "documentation": "README.md",
        "covers": ["cover.png"],
        "timestamp": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        "inputs": [{
            "id": INPUT_ID,
            "description": "noisy image, in the training data's intensity units",
            "axes": _axes(ndim, multiple=multiple, halo=None, reach=halo),
            "test_tensor": {"source": "test_input.npy", "sha256": _sha256(files["test_input.npy"])},
            "sample_tensor": {"source": "sample_input.tif", "sha256": _sha256(files["sample_input.tif"])},
            "data": {"type": "float32"},
            "preprocessing": [{"id": "scale_linear", "kwargs": {
                "gain": 1.0 / norm.in_scale, "offset": -norm.in_offset / norm.in_scale}}],
        }],
        "outputs": [{
            "id": OUTPUT_ID,
            "description": "denoised image, same shape and units as the input",
            "axes": _axes(ndim, multiple=multiple, halo=halo),
            "test_tensor": {"source": "test_output.npy", "sha256": _sha256(files["test_output.npy"])},
            "sample_tensor": {"source": "sample_output.tif", "sha256": _sha256(files["sample_output.tif"])},
            "data": {"type": "float32"},
            "postprocessing": [{"id": "scale_linear", "kwargs": {"gain": norm.out_scale, "offset": norm.out_offset}}],
        }],
        "weights": weights_rdf,
        "config": {"pairless": {
            "version": __version__,
            "method": method,
            "normalisation": norm.as_dict(),
            "multiple": multiple,
            "spatial_ndim": ndim,
            "model_config": {k: v for k, v in config.items()},
            "source_folder_config": CONFIG_FILE,
        }},
    }
    import yaml

    files = {"rdf.yaml": yaml.safe_dump(rdf, sort_keys=False, allow_unicode=True).encode(), **files}
    with atomic_path(out) as tmp_zip, zipfile.ZipFile(tmp_zip, "w", compression=zipfile.ZIP_DEFLATED) as archive:
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


# --------------------------------------------------------------------------------------------------
# Import


def _safe_entries(archive: zipfile.ZipFile, path: Path) -> dict[str, zipfile.ZipInfo]:
    entries = {}
    total = 0
    for info in archive.infolist():
        name = info.filename
        pure = PurePosixPath(name.replace("\\", "/"))
        if pure.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") \
                or ".." in pure.parts:
            raise PairlessError(
                f"{str(path)!r} has a zip entry with an absolute or '..' path ({name!r}); pairless refuses "
                f"packages whose files could land outside their folder: get the package from a trusted source"
            )
        total += info.file_size
        entries[pure.as_posix()] = info
    if total > MAX_PACKAGE_BYTES:
        raise PairlessError(
            f"{str(path)!r} would unpack to {total / 1e9:.1f} GB, more than any denoiser needs; it is not a model package"
        )
    return entries


def _read(archive: zipfile.ZipFile, entries: dict, name: str, path: Path, sha256: str | None = None) -> bytes:
    key = PurePosixPath(str(name).replace("\\", "/")).as_posix()
    if key not in entries:
        raise PairlessError(f"{str(path)!r} names {name!r} in its rdf.yaml but does not contain it; the package is damaged")
    try:
        data = archive.read(entries[key])
    except (zipfile.BadZipFile, OSError, EOFError) as err:  # CRC mismatch, truncated member, bad compression
        raise PairlessError(f"{str(path)!r} is a corrupt zip ({err}); download or export the package again") from None
    if sha256 and _sha256(data) != str(sha256).lower():
        raise PairlessError(
            f"{name!r} in {str(path)!r} does not match the sha256 its rdf.yaml gives; the package is damaged or altered"
        )
    return data


def _not_a_denoiser(path: Path, why: str) -> PairlessError:
    return PairlessError(f"{str(path)!r} is not a denoiser package: {why}; pass a BMZ package of a one-channel denoiser")


def _tensor_axes(tensor: dict, path: Path, which: str) -> tuple[list[str], int]:
    axes = tensor.get("axes")
    if not isinstance(axes, list):
        raise _not_a_denoiser(path, f"its {which} has no axes list (a bioimage.io 0.4 package? only 0.5 is read)")
    ids, channels = [], 1
    for axis in axes:
        if not isinstance(axis, dict):
            raise _not_a_denoiser(path, f"its {which} axes are not spec-0.5 axis entries")
        kind = axis.get("type")
        if kind == "batch":
            continue
        if kind == "channel":
            channels = len(axis.get("channel_names") or [None])
            continue
        if kind != "space":
            raise _not_a_denoiser(path, f"its {which} has a {kind!r} axis")
        ids.append(str(axis.get("id", "")).lower())
    if channels != 1:
        raise _not_a_denoiser(path, f"its {which} has {channels} channels")
    if ids not in (["y", "x"], ["z", "y", "x"]):
        raise _not_a_denoiser(path, f"its {which} has spatial axes {ids}, not (z,) y, x")
    return ids, channels


def _affine(ops, path: Path, which: str) -> tuple[float, float]:
    """``(gain, offset)`` of a list of spec-0.5 processing steps that is affine (or the identity)."""
    gain, offset = 1.0, 0.0
    for op in ops or []:
        kind, kwargs = op.get("id"), op.get("kwargs") or {}
        if kind == "ensure_dtype":
            continue
        try:
            if kind == "scale_linear":
                g, o = float(kwargs.get("gain", 1.0)), float(kwargs.get("offset", 0.0))
            elif kind == "fixed_zero_mean_unit_variance":
                std = float(kwargs["std"]) + 1e-6  # bioimageio.core divides by std + 1e-6
                g, o = 1.0 / std, -float(kwargs["mean"]) / std
            else:
                raise PairlessError(
                    f"{str(path)!r} uses {which} {kind!r}, which pairless does not apply; only scale_linear and "
                    f"fixed_zero_mean_unit_variance are supported (a per-image normalisation is not a fixed model)"
                )
        except (TypeError, ValueError, KeyError):
            raise PairlessError(
                f"{str(path)!r} gives {which} {kind!r} per-channel or malformed kwargs; pairless reads scalar ones only"
            ) from None
        gain, offset = g * gain, g * offset + o
    return gain, offset


def read_bmz(path: str | os.PathLike) -> tuple[dict, zipfile.ZipFile, dict]:
    """Open a package: ``(rdf, archive, entries)`` after the safety checks; the caller closes ``archive``."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise PairlessError(f"{str(path)!r} is not a file; pass a BMZ package (.zip)")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise PairlessError(f"{str(path)!r} is not a readable zip ({err}); download or export the package again") from None
    try:
        entries = _safe_entries(archive, path)
        name = next((n for n in entries if n in RDF_NAMES), None) or next(
            (n for n in entries if n.endswith(".bioimageio.yaml") and "/" not in n), None)
        if name is None:
            raise _not_a_denoiser(path, "it has no rdf.yaml (not a bioimage.io package)")
        try:
            rdf = yaml.safe_load(_read(archive, entries, name, path))
        except yaml.YAMLError as err:
            raise PairlessError(f"{name} in {str(path)!r} is not valid YAML ({str(err).splitlines()[0]})") from None
        if not isinstance(rdf, dict) or rdf.get("type") != "model":
            kind = rdf.get("type") if isinstance(rdf, dict) else type(rdf).__name__
            raise _not_a_denoiser(path, f"it describes a {kind!r}, not a model")
        if not str(rdf.get("format_version", "")).startswith("0.5"):
            raise PairlessError(
                f"{str(path)!r} is a bioimage.io {rdf.get('format_version')} package; pairless reads spec 0.5 "
                f"(update it with `bioimageio update-format`)"
            )
        return rdf, archive, entries
    except BaseException:
        archive.close()
        raise


def load_bmz(path: str | os.PathLike, *, tile: int = DEFAULT_TILE, overlap: int = 32, tta: bool = False) -> Denoiser:
    """Read a bioimage.io 0.5 denoiser package into a pairless denoiser, running nothing from the package.

    The network comes from the ``pytorch_state_dict`` entry when its architecture is one of
    pairless's networks (by class name, built from the package's kwargs; weights read with
    ``weights_only``), else from the ``onnx`` entry (ONNX Runtime, ``pairless[onnx]``).
    """
    path = Path(path)
    rdf, archive, entries = read_bmz(path)
    with contextlib.closing(archive):
        inputs, outputs = rdf.get("inputs") or [], rdf.get("outputs") or []
        if len(inputs) != 1 or len(outputs) != 1:
            raise _not_a_denoiser(path, f"it has {len(inputs)} inputs and {len(outputs)} outputs, not one of each")
        in_axes, _ = _tensor_axes(inputs[0], path, "input")
        out_axes, _ = _tensor_axes(outputs[0], path, "output")
        if in_axes != out_axes:
            raise _not_a_denoiser(path, f"its output axes {out_axes} differ from its input axes {in_axes}")
        for axis in outputs[0]["axes"]:
            size = axis.get("size") if isinstance(axis, dict) and axis.get("type") == "space" else None
            if size is not None and not (isinstance(size, dict) and size.get("axis_id") == axis.get("id")
                                         and size.get("tensor_id") == inputs[0].get("id")
                                         and not size.get("offset") and size.get("scale", 1) in (1, 1.0)):
                raise _not_a_denoiser(path, "its output is not the size of its input")
        ndim = len(in_axes)
        multiple = 1
        for axis in inputs[0]["axes"]:
            if isinstance(axis, dict) and axis.get("type") == "space" and isinstance(axis.get("size"), dict):
                multiple = max(multiple, int(axis["size"].get("step") or 1))  # sizes must be multiples of the step
        gain_in, offset_in = _affine(inputs[0].get("preprocessing"), path, "preprocessing")
        gain_out, offset_out = _affine(outputs[0].get("postprocessing"), path, "postprocessing")
        norm = Normalisation(-offset_in / gain_in, 1.0 / gain_in, gain_out, offset_out)
        ours = ((rdf.get("config") or {}).get("pairless") or {}).get("normalisation")
        if isinstance(ours, dict):  # pairless's exact values (the rdf's are their float-rounded inverses)
            exact = Normalisation(**{k: float(ours[k]) for k in Normalisation.__dataclass_fields__})
            if np.allclose([exact.in_offset, exact.in_scale, exact.out_scale, exact.out_offset],
                           [norm.in_offset, norm.in_scale, norm.out_scale, norm.out_offset], rtol=1e-5, atol=1e-8):
                norm = exact
        net, precision = _network(rdf.get("weights") or {}, archive, entries, path)
        return PackagedDenoiser(net, norm, spatial_ndim=ndim, multiple=multiple, tile=tile, overlap=overlap,
                                tta=tta, precision=precision)


def _network(weights: dict, archive, entries, path: Path) -> tuple[nn.Module, str]:
    formats = sorted(k for k, v in weights.items() if v)
    state_entry = weights.get("pytorch_state_dict")
    refusal = None
    if isinstance(state_entry, dict):
        arch = state_entry.get("architecture") or {}
        name = str(arch.get("callable", ""))
        cls = architectures().get(name)
        if cls is None or "import_from" in arch and not str(arch["import_from"]).startswith("pairless."):
            refusal = (f"its pytorch_state_dict architecture {arch.get('import_from', arch.get('source', ''))}:{name} "
                       f"is not one of pairless's networks ({', '.join(sorted(architectures()))})")
        else:
            net, refusal = _own_network(cls, name, arch.get("kwargs") or {})
            if net is not None:
                data = _read(archive, entries, state_entry.get("source", ""), path, state_entry.get("sha256"))
                state = _state_dict(data, str(state_entry.get("source", "")), path)
                _check_state_shapes(net, state, name)
                net.load_state_dict(state)
                return net.eval(), "auto"
    onnx_entry = weights.get("onnx")
    if isinstance(onnx_entry, dict):
        data = _read(archive, entries, onnx_entry.get("source", ""), path, onnx_entry.get("sha256"))
        return OnnxNet(data, path), "32"
    if refusal is None and formats and set(formats) <= {"torchscript"}:
        raise PairlessError(
            f"{str(path)!r} offers only TorchScript weights, which pairless never runs (TorchScript is code from the "
            f"package); ask for a package with pytorch_state_dict or onnx weights"
        )
    why = refusal or f"its weight formats ({', '.join(formats) or 'none'}) are not ones pairless reads"
    raise PairlessError(
        f"{str(path)!r} cannot be loaded: {why}; pairless reads pytorch_state_dict weights of its own networks or "
        f"onnx weights, and never imports a package's architecture source or runs its TorchScript"
    )


def _own_network(cls: type[nn.Module], name: str, kwargs) -> tuple[nn.Module | None, str | None]:
    """pairless's ``cls`` built from a package's kwargs, or ``(None, why not)`` (then ONNX may serve)."""
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    if not isinstance(kwargs, dict) or not set(kwargs) <= accepted or not all(map(_json_value, kwargs.values())):
        return None, (f"the kwargs of its architecture {name} ({kwargs}) are not those of pairless's {name} "
                      f"({', '.join(sorted(accepted))}), so it is another network")
    try:
        return cls(**kwargs), None
    except (TypeError, ValueError) as err:
        return None, f"pairless's {name} cannot be built from its kwargs {kwargs} ({err})"


def _state_dict(data: bytes, source: str, path: Path) -> dict[str, torch.Tensor]:
    try:
        if source.endswith(".safetensors"):
            from safetensors.torch import load as load_safetensors

            state = load_safetensors(data)
        else:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # weights_only refuses any pickle that is not plain tensors and containers
        raise PairlessError(
            f"the pytorch_state_dict weights {source!r} in {str(path)!r} are not a plain state dict "
            f"({str(err).splitlines()[0] if str(err) else type(err).__name__}); pairless loads weights only"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PairlessError(f"the weights {source!r} in {str(path)!r} are not a dict of tensors; the package is damaged")
    return state


class OnnxNet(nn.Module):
    """A package's ONNX network in ONNX Runtime, called like a torch network (fp32)."""

    def __init__(self, model: bytes, path: Path):
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError:
            raise PairlessError(
                f"{str(path)!r} offers ONNX weights only here, and ONNX Runtime is not installed; "
                f"pip install 'pairless[onnx]'"
            ) from None
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except Exception as err:
            raise PairlessError(f"the ONNX weights in {str(path)!r} cannot be read ({str(err).splitlines()[0]})") from None
        self.input_name = self.session.get_inputs()[0].name

    def __deepcopy__(self, memo):  # predict_tiled copies the network; the session is shared, read-only
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input_name: x.detach().float().cpu().contiguous().numpy()})[0]
        return torch.from_numpy(np.ascontiguousarray(out)).to(x.dtype)


def is_bmz(path: str | os.PathLike) -> bool:
    """Whether ``path`` is meant as a BMZ package (a ``.zip`` file), rather than a model folder or method."""
    return str(path).lower().endswith(".zip")
