"""What a pairless BMZ package is: its constants, its normalisation, the denoiser it makes, the networks
pairless builds."""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import pkgutil
from dataclasses import dataclass

import torch
from torch import nn

from pairless.denoiser import SPATIAL, Denoiser
from pairless.errors import PairlessError
from pairless.inference.tiling import DEFAULT_TILE

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")


FORMAT_VERSION = "0.5.4"  # the oldest 0.5 release with everything used here: readable by older BMZ tools


INPUT_ID, OUTPUT_ID = "raw", "denoised"


MAX_HALO = 64


MAX_PACKAGE_BYTES = 4 << 30  # uncompressed; refuses zip bombs before anything is decompressed


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
    """A network with an affine normalisation around it, predicted tile by tile
    (``pairless.inference.tiling``).

    This is the computation of every exportable pairless denoiser, written out once, so a model
    loaded from a package denoises exactly as the model folder it came from.
    """

    def __init__(
        self,
        net: nn.Module,
        norm: Normalisation,
        *,
        spatial_ndim: int,
        multiple: int,
        tile: int = DEFAULT_TILE,
        overlap: int = 32,
        tta: bool = False,
        precision: str = "auto",
    ):
        super().__init__()
        self.net = net.eval()
        self.norm, self.spatial_ndim, self.multiple = norm, spatial_ndim, multiple
        self.tile, self.overlap, self.tta, self.precision = tile, overlap, tta, precision

    def forward(self, y: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
        from pairless.inference.tiling import predict_tiled

        if y.ndim != 2 + self.spatial_ndim:
            raise PairlessError(
                f"this {self.spatial_ndim}D model needs (B, 1, {', '.join(SPATIAL[-self.spatial_ndim :])})"
                f" input, got shape {tuple(y.shape)}"
            )
        n = self.norm
        x = (y.float() - n.in_offset) / n.in_scale
        with torch.no_grad():
            out = predict_tiled(
                self.net,
                x,
                tile=self.tile,
                overlap=self.overlap,
                tta=self.tta,
                multiple=self.multiple,
                precision=self.precision,
            )
        return out * n.out_scale + n.out_offset


@functools.cache
def architectures() -> dict[str, type[nn.Module]]:
    """Every network class defined in ``pairless.nets``, by class name (the only ones :func:`load_bmz`
    builds)."""
    import pairless.nets

    found: dict[str, type[nn.Module]] = {}
    for info in pkgutil.iter_modules(pairless.nets.__path__):
        try:
            module = importlib.import_module(f"pairless.nets.{info.name}")
        except ImportError:  # a network needing an optional package that is not installed
            continue
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, nn.Module)
                and obj.__module__ == module.__name__
                and not name.startswith("_")
            ):
                found[name] = obj
    return found


def _check_state_shapes(net: nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    mine = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in state.items()}
    if mine != theirs:
        missing = sorted(set(mine) ^ set(theirs)) or sorted(k for k in mine if mine[k] != theirs[k])
        raise PairlessError(
            f"the weights do not fit pairless's {name} built from the package's kwargs (first mismatch: "
            f"{missing[0]!r}); the package is damaged or describes another network"
        )


def _json_value(value) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_json_value(v) for v in value)
    return False


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
