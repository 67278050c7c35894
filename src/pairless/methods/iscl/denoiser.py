"""The trained ISCL model as a denoiser: the mix of its two clean estimates, run on whole images."""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor, nn

from pairless.denoiser import Denoiser
from pairless.errors import PairlessError
from pairless.inference.tiling import DEFAULT_TILE
from pairless.methods.iscl.config import ISCLConfig, norm_layers
from pairless.methods.iscl.losses import eval_mode
from pairless.nets.iscl import (
    LOCAL_NORMS,
    MULTIPLE,
    Extractor,
    Generator,
)


class ISCLOutput(nn.Module):
    """clip(γ·F(x) + (1-γ)·(x - H(x)), -1, 1): the average of ISCL's two clean estimates."""

    def __init__(self, F: Generator, H: Extractor, mix: float = 0.5):
        super().__init__()
        self.F, self.H, self.mix = F, H, mix

    def forward(self, x: Tensor) -> Tensor:
        return (self.mix * self.F(x) + (1 - self.mix) * (x - self.H(x))).clamp(-1, 1)

    def estimates(self, x: Tensor) -> dict[str, Tensor]:
        """The two clean estimates and their mix, each clipped: ``{"f": F(x), "h": x - H(x), "mix": output}``.

        Runs in eval mode (the caller's mode is restored), as the official ``predict`` does.
        """
        with eval_mode(self.F, self.H):
            f, h = self.F(x), x - self.H(x)
        return {
            "f": f.clamp(-1, 1),
            "h": h.clamp(-1, 1),
            "mix": (self.mix * f + (1 - self.mix) * h).clamp(-1, 1),
        }


# the largest image run whole (2048²: ~0.3 GB per bf16 activation of a 32-channel layer); larger ones are
# tiled
WHOLE_IMAGE_PIXELS = 2048 * 2048


class ISCLDenoiser(Denoiser):
    """A trained ISCL model: maps noisy intensities to the clean set's intensities.

    With ``whole_image`` (set by :func:`load_denoiser` when F or H normalise by statistics over the
    whole input: instance, layer, group, switchable, batch-instance) each image runs whole and alone,
    as the official test does; 256-px tiles would each be normalised by their own statistics, and
    pooled tiles of several images would share the batch moments of ISCL's BIN.  An image of more
    than ``max_pixels`` pixels is tiled instead, with a warning.  Models made only of batch norm
    and spectral norm give the same result either way and are tiled (``tile``, ``overlap``).
    """

    spatial_ndim = 2

    def __init__(
        self,
        output: ISCLOutput,
        *,
        noisy_range: tuple[float, float],
        clean_range: tuple[float, float],
        tile: int = DEFAULT_TILE,
        overlap: int = 32,
        tta: bool = False,
        whole_image: bool = True,
        max_pixels: int = WHOLE_IMAGE_PIXELS,
    ):
        super().__init__()
        self.output = output.eval()
        self.noisy_range, self.clean_range = noisy_range, clean_range
        self.tile, self.overlap, self.tta = tile, overlap, tta
        self.whole_image, self.max_pixels = whole_image, max_pixels

    def forward(self, y: Tensor, sigma: float | None = None) -> Tensor:
        from pairless.inference.tiling import predict_tiled

        x = to_unit_range(y, self.noisy_range)
        h, w = x.shape[-2:]
        if self.whole_image and h * w > self.max_pixels:
            warnings.warn(
                f"the {h}×{w} image is larger than ISCL's whole-image limit ({self.max_pixels} pixels), so it"
                f" is denoised in {self.tile}-px tiles, each normalised by its own statistics (the official"
                " code runs whole images), so the result differs from a whole-image run",
                stacklevel=2,
            )
        if not self.whole_image or h * w > self.max_pixels:
            out = predict_tiled(
                self.output, x, tile=self.tile, overlap=self.overlap, tta=self.tta, multiple=MULTIPLE
            )
        else:
            # one tile that covers the image, one image per forward pass
            edge = max(math.ceil(h / MULTIPLE), math.ceil(w / MULTIPLE)) * MULTIPLE
            out = torch.cat(
                [
                    predict_tiled(
                        self.output, x[i : i + 1], tile=edge, overlap=0, tta=self.tta, multiple=MULTIPLE
                    )
                    for i in range(x.shape[0])
                ]
            )
        return from_unit_range(out, self.clean_range).to(y.dtype)


def to_unit_range(image, value_range: tuple[float, float]):
    lo, hi = value_range
    return (image - (hi + lo) / 2) / ((hi - lo) / 2)


def from_unit_range(image, value_range: tuple[float, float]):
    lo, hi = value_range
    return image * ((hi - lo) / 2) + (hi + lo) / 2


def load(
    config: dict,
    weights: dict[str, Tensor],
    *,
    tile: int = DEFAULT_TILE,
    overlap: int = 32,
    tta: bool = False,
) -> ISCLDenoiser:
    """Rebuild the denoiser of a model folder (``config.yaml`` + ``weights.safetensors``)."""
    cfg = ISCLConfig.from_dict(config["iscl"])
    norms = norm_layers(cfg)
    output = ISCLOutput(
        Generator(norms.generator, cfg.generator_width),
        Extractor(norms.extractor, cfg.extractor_width, cfg.extractor_depth),
        cfg.output_mix,
    )
    # batch norm's running statistics and spectral norm act per pixel neighbourhood at inference;
    # every other layer normalises by statistics of the whole input, which tiling would change
    whole = not {norms.generator, norms.extractor} <= LOCAL_NORMS
    try:
        output.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise PairlessError(
            f"the ISCL weights do not match config.yaml ({str(err).splitlines()[0]}); "
            "the model folder is damaged or mixed up: train it again with `pairless fit iscl`"
        ) from None
    return ISCLDenoiser(
        output,
        noisy_range=tuple(config["noisy_range"]),
        clean_range=tuple(config["clean_range"]),
        tile=tile,
        overlap=overlap,
        tta=tta,
        whole_image=whole,
    )
