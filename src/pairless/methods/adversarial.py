"""What the adversarial baselines of seed 002's Table 2 (ADN, UIDNet, CaGAN) share: their settings'
common part, the check of the two training sets, the intensity map, the manual-optimisation Lightning
module that runs each method's iteration, the one training ending, and the whole-image denoiser.

Each method keeps its **last** weights, as the official codes train: no checkpoint is chosen with a
validation score (for an unpaired method a score against clean images of the noisy set would use the
pairs the method is meant not to have).  ``val_loss`` is logged for the loss curves only.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from pairless.config import Config
from pairless.denoiser import Denoiser
from pairless.errors import PairlessError
from pairless.inference.tiling import DEFAULT_TILE
from pairless.methods.iscl.training import lr_factor
from pairless.training.engine import train_on_patches
from pairless.training.modelio import run_record
from pairless.training.patches import PairedPatches, UnpairedPatches, value_range


class AdversarialConfig(Config):
    """Settings every adversarial baseline has; the defaults are the ``paper`` profile's budget (seed 002:
    "the same environment and hyper-parameters as ISCL", i.e. the official ISCL demo's batch 64 of 64²
    patches for 8k iterations).

    The learning rate warms up linearly over ``warmup_steps``, holds until ``decay_start`` (a fraction of
    ``steps``; 1: never decays, as the official codes), then falls linearly to ``min_lr``.
    ``augmentation``: ``dihedral`` (8 rotations/flips), ``flips`` (4 that keep the axes: for noise with a
    direction) or ``updown``.
    """

    patch_size: int = Field(64, ge=32, multiple_of=16)
    batch_size: int = Field(64, ge=1)
    steps: int = Field(8000, ge=1)
    lr: float = Field(1e-4, gt=0)
    betas: tuple[float, float] = (0.5, 0.999)
    min_lr: float = Field(1e-6, ge=0)
    warmup_steps: int = Field(0, ge=0)
    decay_start: float = Field(1.0, ge=0, le=1)
    augmentation: Literal["dihedral", "flips", "updown"] = "dihedral"
    val_every: int = Field(400, ge=1)
    val_batches: int = Field(2, ge=1)
    precision: Literal["32-true", "bf16-mixed"] = "32-true"
    weight_decay: float = Field(0.0, ge=0)  # Adam's (coupled) L2 penalty


def _channels(image: np.ndarray) -> int | None:
    """1 for a 2D image, C for a YXC or CYX image of at most 4 channels, None for anything else."""
    if image.ndim == 2:
        return 1
    if image.ndim == 3 and image.shape[-1] <= 4:
        return image.shape[-1]
    if image.ndim == 3 and image.shape[0] <= 4:
        return image.shape[0]
    return None


def check_sets(
    noisy: Sequence, clean: Sequence, *, method: str, patch: int, paired: bool
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The two sets as float32 2D images, or one line saying what is wrong with them and what to do."""
    for name, images in (("noisy", noisy), ("clean", clean)):
        if len(images) == 0:
            raise PairlessError(f"the {name} set is empty; pass at least one {name} image to {method}")
    counts = {}
    for name, images in (("noisy", noisy), ("clean", clean)):
        found = {_channels(np.asarray(im)) for im in images}
        if None in found:
            shape = next(np.shape(im) for im in images if _channels(np.asarray(im)) is None)
            raise PairlessError(
                f"a {name} image has shape {shape}, but {method} trains on 2D (YX) images; "
                "split stacks into 2D slices first"
            )
        if len(found) > 1:
            raise PairlessError(
                f"the {name} images have different channel counts ({', '.join(map(str, sorted(found)))}); "
                "pass images with one channel"
            )
        counts[name] = found.pop()
    if counts["noisy"] != counts["clean"]:
        raise PairlessError(
            f"the noisy images have {counts['noisy']} channel(s) and the clean images {counts['clean']}; "
            f"{method} trains on one-channel images: convert both sets to grey"
        )
    if counts["noisy"] > 1:
        raise PairlessError(
            f"the images have {counts['noisy']} channels, but {method} trains on one-channel images; "
            "convert them to grey"
        )
    if paired and len(noisy) != len(clean):
        raise PairlessError(
            f"{method} trains on aligned pairs but got {len(noisy)} noisy and {len(clean)} clean images; "
            "pass one clean image per noisy image, in the same order"
        )
    checked = {}
    for name, images in (("noisy", noisy), ("clean", clean)):
        out = []
        for i, image in enumerate(images):
            image = np.asarray(image)
            if not np.issubdtype(image.dtype, np.number) or np.issubdtype(image.dtype, np.complexfloating):
                raise PairlessError(f"{name} image {i} has dtype {image.dtype}; pass real-valued images")
            if min(image.shape) < patch:
                raise PairlessError(
                    f"{name} image {i} ({image.shape[0]}×{image.shape[1]}) is smaller than the "
                    f"{patch}×{patch} training patch; use larger images"
                )
            image = image.astype(np.float32)
            if not np.isfinite(image).all():
                raise PairlessError(f"{name} image {i} contains NaN or Inf; replace them before training")
            out.append(image)
        checked[name] = out
    if paired:
        for i, (x, y) in enumerate(zip(checked["noisy"], checked["clean"])):
            if x.shape != y.shape:
                raise PairlessError(
                    f"pair {i}: noisy shape {x.shape} and clean shape {y.shape} differ; pass aligned pairs"
                )
    return checked["noisy"], checked["clean"]


class IntensityMap:
    """Linear map of the ``source`` range onto ``target`` ((-1, 1) for tanh outputs, (0, 1)) and back."""

    def __init__(self, source: Sequence[float], target: Sequence[float]):
        self.lo, self.hi = (float(v) for v in source)
        self.t0, self.t1 = (float(v) for v in target)

    def forward(self, image):
        return (image - self.lo) / (self.hi - self.lo) * (self.t1 - self.t0) + self.t0

    def inverse(self, image):
        return (image - self.t0) / (self.t1 - self.t0) * (self.hi - self.lo) + self.lo


class AdversarialModule(L.LightningModule):
    """Runs a method's ``iterate(x, y, optimizers, backward)`` once per step (manual optimisation) and
    logs what it returns; ``train_loss`` and ``val_loss`` are the method's ``monitor`` terms."""

    def __init__(self, config: AdversarialConfig, *, method: str, seed: int):
        super().__init__()
        self.config = config
        self.automatic_optimization = False
        self.save_hyperparameters({method: config.model_dump(mode="json"), "seed": seed})

    def parameter_groups(self) -> list[list[nn.Parameter]]:
        """The parameters of each optimizer, in the order ``iterate`` takes the optimizers."""
        raise NotImplementedError

    def iterate(self, x: Tensor, y: Tensor, optimizers: Sequence, backward) -> dict[str, Tensor]:
        """One iteration on a noisy batch ``x`` and a clean batch ``y``: every step, in order; the logs."""
        raise NotImplementedError

    def monitor(self, x: Tensor, y: Tensor) -> Tensor:
        """A loss that needs no discriminator, for the loss curves (``train_loss``, ``val_loss``)."""
        raise NotImplementedError

    def configure_optimizers(self):
        cfg = self.config
        optimizers = [
            torch.optim.Adam(group, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
            for group in self.parameter_groups()
        ]
        schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lr_factor(cfg)) for o in optimizers]
        return optimizers, schedulers

    def training_step(self, batch, batch_idx):
        wrapped = self.optimizers()
        # Lightning counts each LightningOptimizer.step() as a global step: all but the last optimizer
        # step raw, so that global_step (and max_steps) counts iterations
        optimizers = [o.optimizer for o in wrapped[:-1]] + [wrapped[-1]]
        logs = self.iterate(*batch, optimizers, self.manual_backward)
        for scheduler in self.lr_schedulers():
            scheduler.step()
        self.log_dict({k: v.detach() for k, v in logs.items()}, on_step=True, on_epoch=False)
        with torch.no_grad():
            self.log("train_loss", self.monitor(*batch), prog_bar=True)

    def validation_step(self, batch, batch_idx):
        with torch.no_grad():
            self.log(
                "val_loss", self.monitor(*batch), on_epoch=True, prog_bar=True, batch_size=batch[0].shape[0]
            )


def train_two_sets(
    module_class: type[AdversarialModule],
    noisy: list[np.ndarray],
    clean: list[np.ndarray],
    *,
    method: str,
    config: AdversarialConfig,
    intensities: tuple[float, float],
    paired: bool,
    denoiser_net: Callable[[AdversarialModule], nn.Module],
    out: Path,
    seed: int,
    progress: bool,
    resume: bool | None,
    overwrite: bool,
) -> tuple[dict, dict[str, Tensor]]:
    """Check the two sets, map both by the clean set's [min, max] onto the model's ``intensities`` (sets in
    the same units), draw patches (aligned pairs, or independent draws) and run the one training ending.
    The model folder holds ``denoiser_net(module)``'s last weights; its denoiser returns the clean units."""
    noisy, clean = check_sets(noisy, clean, method=method, patch=config.patch_size, paired=paired)
    clean_range = value_range(clean)
    unit = IntensityMap(clean_range, intensities)
    module = module_class(config, seed=seed)
    x = [unit.forward(im).astype(np.float32) for im in noisy]
    y = [unit.forward(im).astype(np.float32) for im in clean]
    b, p = config.batch_size, config.patch_size
    if paired:
        train = PairedPatches(x, y, patch=p, length=config.steps * b, seed=seed, augment=config.augmentation)
        val = PairedPatches(x, y, patch=p, length=config.val_batches * b, seed=seed + 1, augment="none")
    else:
        if config.augmentation == "updown":
            raise PairlessError(
                "augmentation 'updown' needs aligned pairs; an unpaired method takes 'dihedral' or 'flips'"
            )
        train = UnpairedPatches(
            x, y, patch=p, length=config.steps * b, seed=seed, augmentation=config.augmentation
        )
        val = UnpairedPatches(
            x, y, patch=p, length=config.val_batches * b, seed=seed + 1, augmentation=config.augmentation
        )

    def export(_best: Path) -> tuple[dict, dict[str, Tensor]]:  # the last weights (the module docstring)
        written = {
            "method": method,
            method: config.model_dump(mode="json"),
            "noisy_range": list(clean_range),
            "clean_range": list(clean_range),
            "seed": seed,
        }
        return written, denoiser_net(module).state_dict()

    return train_on_patches(
        module,
        train,
        val,
        config=config,
        folder=out,
        export=export,
        record=run_record(method, config.model_dump(mode="json"), seed=seed, data=[*noisy, *clean]),
        seed=seed,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
    )


# the largest image run whole (2048²); larger ones are tiled, with a warning
WHOLE_IMAGE_PIXELS = 2048 * 2048


class TwoSetDenoiser(Denoiser):
    """A trained network in the model's intensities, mapped from the noisy units and back to the clean ones.

    ``whole_image``: networks that take statistics over their whole input (instance and layer norm,
    channel attention, criss-cross attention) run on one whole image at a time, as their official tests
    do; a larger image than ``max_pixels`` is tiled instead, with a warning.  Otherwise tiles.
    """

    spatial_ndim = 2

    def __init__(
        self,
        net: nn.Module,
        *,
        noisy_map: IntensityMap,
        clean_map: IntensityMap,
        multiple: int,
        whole_image: bool,
        tile: int = DEFAULT_TILE,
        overlap: int = 32,
        tta: bool = False,
        max_pixels: int = WHOLE_IMAGE_PIXELS,
    ):
        super().__init__()
        self.net = net.eval()
        self.noisy_map, self.clean_map = noisy_map, clean_map
        self.multiple, self.whole_image, self.max_pixels = multiple, whole_image, max_pixels
        self.tile, self.overlap, self.tta = tile, overlap, tta

    def forward(self, y: Tensor, sigma: float | None = None) -> Tensor:
        from pairless.inference.tiling import predict_tiled

        x = self.noisy_map.forward(y.float())
        h, w = x.shape[-2:]
        whole = self.whole_image and h * w <= self.max_pixels
        if self.whole_image and not whole:
            warnings.warn(
                f"the {h}×{w} image is larger than the whole-image limit ({self.max_pixels} pixels), so it is"
                f" denoised in {self.tile}-px tiles, each normalised by its own statistics",
                stacklevel=2,
            )
        if whole:
            edge = max(math.ceil(h / self.multiple), math.ceil(w / self.multiple)) * self.multiple
            out = torch.cat(
                [
                    predict_tiled(
                        self.net, x[i : i + 1], tile=edge, overlap=0, tta=self.tta, multiple=self.multiple
                    )
                    for i in range(x.shape[0])
                ]
            )
        else:
            out = predict_tiled(
                self.net, x, tile=self.tile, overlap=self.overlap, tta=self.tta, multiple=self.multiple
            )
        out = out.clamp(min(self.clean_map.t0, self.clean_map.t1), max(self.clean_map.t0, self.clean_map.t1))
        return self.clean_map.inverse(out).to(y.dtype)


def load_weights(net: nn.Module, weights: dict[str, Tensor], method: str) -> None:
    try:
        net.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise PairlessError(
            f"the {method} weights do not match config.yaml ({str(err).splitlines()[0]}); the model folder "
            f"is damaged or mixed up: train it again with `pairless fit {method}`"
        ) from None


def load_two_sets(
    net: nn.Module,
    config: dict,
    weights: dict[str, Tensor],
    *,
    method: str,
    intensities: tuple[float, float],
    multiple: int,
    whole_image: bool,
    tile: int | None,
    overlap: int,
    tta: bool,
) -> TwoSetDenoiser:
    """The denoiser of a model folder written by :func:`train_two_sets`: ``net`` with its weights."""
    load_weights(net, weights, method)
    return TwoSetDenoiser(
        net,
        noisy_map=IntensityMap(config["noisy_range"], intensities),
        clean_map=IntensityMap(config["clean_range"], intensities),
        multiple=multiple,
        whole_image=whole_image,
        tile=DEFAULT_TILE if tile is None else tile,
        overlap=overlap,
        tta=tta,
    )
