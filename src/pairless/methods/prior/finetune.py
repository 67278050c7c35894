"""A self-supervised method started from the prior (``init: prior``; ``pairless fit ne2ne|r2r --init prior``).

Instead of random weights, the network is the prior (:class:`~pairless.nets.prior_net.PriorNet`, the
shipped weights or a ``pairless pretrain`` folder) inside a
:class:`~pairless.methods.prior.calibrated.CalibratedPrior` calibrated to the training images, and the
method's own loss fine-tunes it.  ``prepare`` (before training, on the unnormalised images ``x``):

1. the noise ``Var = a·E[x] + b`` is measured on each 2D training image
   (:func:`~pairless.methods.prior.calibrated.measure_noise`, at most :data:`MAX_FIT_IMAGES` evenly spaced)
   and averaged by pixel count;
2. the prior's affine map ``u = g·x + o`` is :func:`~pairless.methods.prior.calibrated.calibrate`'s, with
   its robust range taken over every training image's smoothed pixels;
3. the map is rewritten for the normalised ``x' = (x − mean) / std`` that the self-supervised network sees:

       u = g·(std·x' + mean) + o = (g·std)·x' + (g·mean + o);

   the noise in prior units, ``a_u·E[u] + b_u``, is the same map's and does not change.

``make_net`` then returns the calibrated prior with the prior's weights: before any step the model is the
zero-shot prior's σ-map route (``PriorDenoiser(vst="none")``) with one calibration for the whole set.  The
calibration is four buffers of the module, so they are in the model folder's weights; the prior's
architecture is in the config (``prior_widths``, ``prior_blocks``), so the folder rebuilds the exact
trained model without reading the shipped prior again (:func:`make_prior_net` with no start).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, Field
from scipy import ndimage

from pairless.errors import PairlessError
from pairless.methods.prior.calibrated import RANGE_PERCENTILES, CalibratedPrior, Calibration, measure_noise
from pairless.methods.prior.recipe import SMOOTH, build
from pairless.nets.prior_net import PriorNet
from pairless.noise import PoissonGaussian

MAX_FIT_IMAGES = 64  # 2D images the noise is measured on (evenly spaced through the set)
MAX_RANGE_PIXELS = 1 << 22  # smoothed pixels the range percentiles are taken over (evenly strided)
#: settings that ``init: prior`` puts under the profile's (a user's settings still win): the prior is
#: fine-tuned, not trained, so a tenth of the from-scratch rate (benchmarks/prior_finetune.py)
PRIOR_PROFILE = {"lr": 2e-4}


class PriorInit(BaseModel):
    """The start of a self-supervised method that can fine-tune the prior (a config mixin).

    ``init``: ``none`` (random weights, the method's own network) or ``prior`` (the shipped prior calibrated
    to the training images).  ``prior_widths``/``prior_blocks``: the prior network's architecture, set from
    the prior when training starts (what a model folder is rebuilt with; not a setting to change).
    """

    init: Literal["none", "prior"] = "none"
    prior_widths: tuple[int, ...] = (32, 64, 128, 256)
    prior_blocks: int = Field(1, ge=1)


def profile_settings(settings: dict, overrides: dict) -> dict:
    """A profile's ``settings`` with :data:`PRIOR_PROFILE` on top when ``overrides`` start from the prior."""
    return {**settings, **PRIOR_PROFILE} if overrides.get("init") == "prior" else settings


@dataclasses.dataclass(frozen=True)
class PriorStart:
    """What training starts from: the prior's weights and the calibration in normalised units."""

    weights: dict[str, torch.Tensor]
    calibration: Calibration


def read_prior(source: str | Path | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(config, weights)`` of the prior: the shipped one (``None``) or a ``pairless pretrain`` folder."""
    if source is None:
        from pairless.methods.prior.shipped import load_shipped

        return load_shipped()
    from pairless.training.modelio import read_model_folder

    return read_model_folder(source, methods=("prior",))


def training_noise(
    stacks: list[np.ndarray], *, noise: str = "poisson-gaussian", sigma: float | None = None
) -> PoissonGaussian:
    """The noise model of the training images in their own units (module notes, step 1)."""
    images = [image for stack in stacks for image in stack.reshape(-1, *stack.shape[-2:])]
    chosen = np.unique(np.linspace(0, len(images) - 1, min(len(images), MAX_FIT_IMAGES)).round().astype(int))
    fits = [measure_noise(images[i], noise=noise, sigma=sigma) for i in chosen]
    weights = [images[i].size for i in chosen]
    a, b = np.average([(f.a, f.b) for f in fits], axis=0, weights=weights)
    if a < 0 or (a == 0 and b <= 0):
        raise PairlessError(
            f"the noise measured on the training images is not positive (a={a:.3g}, b={b:.3g}); give the"
            " Gaussian noise σ (--sigma)"
        )
    return PoissonGaussian(float(a), float(b))


def calibrate_set(stacks: list[np.ndarray], model: PoissonGaussian) -> Calibration:
    """:func:`~pairless.methods.prior.calibrated.calibrate` over a set of images (module notes, step 2)."""
    images = [image for stack in stacks for image in stack.reshape(-1, *stack.shape[-2:])]
    total = sum(image.size for image in images)
    stride = max(1, total // MAX_RANGE_PIXELS)
    smoothed = np.concatenate(
        [
            ndimage.uniform_filter(image.astype(np.float64), SMOOTH, mode="reflect").reshape(-1)[::stride]
            for image in images
        ]
    )
    low, high = (float(v) for v in np.percentile(smoothed, RANGE_PERCENTILES))
    spread = high - low
    if not spread > 0:  # a flat set: any scale will do, one that keeps the noise at a level the prior knows
        spread = max(float(np.sqrt(max(model.b, 0.0))), abs(low), 1.0)
    gain = 1.0 / spread
    offset = -low * gain
    a, b = float(model.a), float(model.b)
    return Calibration(gain, offset, a * gain, (b - a * offset / gain) * gain * gain)


def normalised(calibration: Calibration, *, mean: float, std: float) -> Calibration:
    """The same map for ``x' = (x − mean) / std`` (module notes, step 3)."""
    c = calibration
    return Calibration(float(c.gain * std), float(c.gain * mean + c.offset), c.a, c.b)


def prepare_start(
    config,
    stacks: list[np.ndarray],
    *,
    mean: float,
    std: float,
    source: str | Path | None = None,
    noise: PoissonGaussian | None = None,
) -> tuple[PriorStart, dict]:
    """The start of an ``init: prior`` run and what the model folder keeps of it.

    Sets ``config.prior_widths``/``prior_blocks`` to the prior's; ``noise`` (image units) is measured when not
    given.
    """
    if config.ndim != 2:
        raise PairlessError("--init prior is 2D only (the prior is a 2D network); train without it for --3d")
    prior_config, weights = read_prior(source)
    settings, _ = build(prior_config)
    config.prior_widths, config.prior_blocks = tuple(settings.widths), settings.blocks
    noise = noise or training_noise(stacks)
    image_units = calibrate_set(stacks, noise)
    calibration = normalised(image_units, mean=mean, std=std)
    learned = {
        "prior_start": {
            "source": "shipped" if source is None else str(source),
            "weights_sha256": prior_config.get("weights_sha256"),
            "noise_model": {"a": noise.a, "b": noise.b},  # image units
            "calibration": dataclasses.asdict(image_units),  # image units -> the prior's [0, 1]
        }
    }
    return PriorStart(weights, calibration), learned


def make_prior_net(config, start: PriorStart | None) -> CalibratedPrior:
    """The calibrated prior of ``config``'s architecture: with ``start``'s weights and calibration, or
    untrained (a model folder's weights are loaded into it)."""
    if config.ndim != 2:
        raise PairlessError("--init prior is 2D only (the prior is a 2D network); train without it for --3d")
    net = PriorNet(widths=config.prior_widths, blocks=config.prior_blocks)
    if start is not None:
        try:
            net.load_state_dict(start.weights)
        except RuntimeError as err:
            raise PairlessError(
                f"the prior's weights do not match its config.yaml ({str(err).splitlines()[0]}); the prior"
                " folder is damaged"
            ) from None
    return CalibratedPrior(net, start.calibration if start is not None else None)


def run(net: torch.nn.Module, y: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
    """``net(y)``; a calibrated prior is told the noise σ map ``sigma`` (``y``'s units) when given."""
    if sigma is not None and isinstance(net, CalibratedPrior):
        return net(y, sigma.to(y.dtype))
    return net(y)
