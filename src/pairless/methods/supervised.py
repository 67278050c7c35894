"""Supervised reference denoisers: DnCNN, RED-CNN and a U-Net trained on clean/noisy *pairs*.

DnCNN and RED-CNN are the upper reference rows of seed 002's Table 2: what a network of that size reaches when
the clean image of every noisy training image is known; the U-Net is the option that sees far enough (a 107-px
window at depth 3) for noise correlated over tens of pixels (EM scan streaks). Training minimises the mean
squared error between the network's output on a noisy patch and the aligned clean patch,

    L(θ) = mean ‖f_θ(x) - y‖²,

with Adam and a cosine learning-rate decay, on random aligned patches (with the same random transform applied
to both; ``augment`` restricts it to flips when the noise has a direction, since a 90° turn makes vertical
streaks that never occur at test time).  Intensities are mapped linearly by the clean training set's [min,
max] to [0, 1] (RED-CNN's final ReLU needs the clean floor at 0) and mapped back afterwards. The weights kept
are those of the best validation loss.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as nnf
from pydantic import Field
from torch import Tensor, nn

from pairless.config import Config
from pairless.denoiser import Denoiser
from pairless.errors import PairlessError
from pairless.inference.tiling import DEFAULT_TILE
from pairless.training.engine import check_step_memory, train_on_patches
from pairless.training.modelio import run_record
from pairless.training.patches import PairedPatches, value_range


class SupervisedConfig(Config):
    """Supervised DnCNN / RED-CNN / U-Net on clean/noisy pairs; defaults are the EM study's ``paper`` profile.

    All are trained with MSE on random aligned patches and Adam, the learning rate decaying by a
    cosine from ``lr`` to ``lr * 0.01``.  ``channels``/``depth`` of ``None`` mean the paper's (DnCNN:
    17 layers of 64; RED-CNN: 96 filters) and, for the U-Net, 32 first-level filters and 3
    down-samplings (a 107-pixel receptive field: it sees EM scan streaks that DnCNN's 35 px cannot).
    ``augment`` is the set of patch transforms: ``dihedral`` (the 8 rotations/flips, for isotropic
    noise), ``flips`` (up-down and left-right: keeps horizontal streaks horizontal), ``updown`` (also
    keeps the scan direction, along which charging tails trail), ``none``.
    """

    arch: Literal["dncnn", "redcnn", "unet"] = "dncnn"
    channels: int | None = Field(None, ge=1)
    depth: int | None = Field(None, ge=1)
    patch_size: int = Field(64, ge=24)
    batch_size: int = Field(64, ge=1)
    steps: int = Field(8000, ge=1)
    lr: float = Field(1e-3, gt=0)
    val_every: int = Field(400, ge=1)
    val_batches: int = Field(2, ge=1)
    precision: Literal["32-true", "bf16-mixed"] = "32-true"
    augment: Literal["dihedral", "flips", "updown", "none"] = "dihedral"

    # paper: the official ISCL demo's budget (batch 64 of 64×64, 8k iterations), full networks.  quick:
    # narrower
    # networks, small batches, bf16, 2500 steps (converged: EM study fold 0, additive charge noise, the
    # U-Net's
    # validation loss flat from ~2000 steps); the architecture-dependent settings are in profile_settings
    PROFILES: ClassVar[dict[str, dict]] = {
        "quick": {
            "batch_size": 8,
            "steps": 2500,
            "val_every": 250,
            "val_batches": 8,
            "precision": "bf16-mixed",
        },
        "paper": {},
    }

    @classmethod
    def for_profile(cls, profile: str, **overrides) -> SupervisedConfig:
        arch = overrides.get("arch", "dncnn")
        if arch not in ARCHS:
            raise PairlessError(f"unknown architecture {arch!r}; use one of {', '.join(ARCHS)}")
        return super().for_profile(profile, **overrides)

    @classmethod
    def profile_settings(cls, profile: str, overrides: dict) -> dict:
        arch = overrides.get("arch", "dncnn")
        lr = 1e-4 if arch == "redcnn" else 1e-3  # RED-CNN has no normalisation layers: a smaller step
        if profile == "paper":
            return {"lr": lr}
        return {
            **cls.PROFILES[profile],
            "channels": 16 if arch == "unet" else 32,
            "depth": {"dncnn": 10, "unet": 3}.get(arch),
            "patch_size": 64 if arch == "unet" else 48,
            "lr": 3 * lr,
        }


ARCHS = ("dncnn", "redcnn", "unet")


def build_net(config: SupervisedConfig) -> nn.Module:
    if config.arch == "unet":
        from pairless.nets.unet import UNet

        # residual: the network learns the noise, as DnCNN does
        return UNet(ndim=2, depth=config.depth or 3, filters=config.channels or 32, residual=True)
    if config.arch == "dncnn":
        from pairless.nets.dncnn import DnCNN

        return DnCNN(depth=config.depth or 17, channels=config.channels or 64)
    from pairless.nets.redcnn import REDCNN

    return REDCNN(channels=config.channels or 96)


class SupervisedModule(L.LightningModule):
    """MSE training of one network on aligned patches; logs ``train_loss`` and ``val_loss``."""

    def __init__(self, config: SupervisedConfig, *, seed: int = 0):
        super().__init__()
        self.config = config
        self.save_hyperparameters({"supervised": config.model_dump(mode="json"), "seed": seed})
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = build_net(config)

    def loss(self, batch) -> Tensor:
        noisy, clean = batch
        return nnf.mse_loss(self.net(noisy).float(), clean)  # L(θ) = mean ‖f_θ(x) - y‖²

    def training_step(self, batch, batch_idx):
        loss = self.loss(batch)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.loss(batch), on_epoch=True, prog_bar=True, batch_size=batch[0].shape[0])

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.net.parameters(), lr=self.config.lr)
        steps = self.config.steps

        def cosine(step: int) -> float:  # from 1 to 0.01 over training
            return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class SupervisedDenoiser(Denoiser):
    """A trained DnCNN / RED-CNN / U-Net applied tile by tile, in the training data's intensity units."""

    spatial_ndim = 2

    def __init__(
        self, net: nn.Module, *, value_range: tuple[float, float], tile=DEFAULT_TILE, overlap=32, tta=False
    ):
        super().__init__()
        self.net = net.eval()
        self.lo, self.hi = value_range
        self.tile, self.overlap, self.tta = tile, overlap, tta

    def forward(self, y: Tensor, sigma: float | None = None) -> Tensor:
        from pairless.inference.tiling import predict_tiled

        scale = self.hi - self.lo
        x = (y.float() - self.lo) / scale
        out = predict_tiled(
            self.net, x, tile=self.tile, overlap=self.overlap, tta=self.tta, multiple=self.net.multiple
        )
        return (out * scale + self.lo).to(y.dtype)


def load(config: dict, weights: dict[str, Tensor], *, tile=DEFAULT_TILE, overlap=32, tta=False) -> Denoiser:
    """Rebuild a :class:`SupervisedDenoiser` from a model folder's config and weights."""
    cfg = SupervisedConfig.from_dict(config["supervised"])
    net = build_net(cfg)
    try:
        net.load_state_dict(weights)
    except RuntimeError as err:
        raise PairlessError(
            f"the weights do not fit a {cfg.arch} network ({str(err).splitlines()[0]}); "
            "the model folder is damaged: train it again with `pairless fit supervised`"
        ) from None
    lo, hi = config["value_range"]
    return SupervisedDenoiser(net, value_range=(float(lo), float(hi)), tile=tile, overlap=overlap, tta=tta)


def train(
    noisy: list[np.ndarray],
    clean: list[np.ndarray],
    *,
    config: SupervisedConfig,
    out: Path,
    seed: int = 0,
    progress: bool = True,
    resume: bool | None = None,
    overwrite: bool = False,
) -> tuple[dict, dict[str, Tensor]]:
    """Train DnCNN, RED-CNN or a U-Net on aligned pairs; write the model folder ``out``; return its contents.

    Parameters
    ----------
    noisy, clean
        2D (YX) images; ``noisy[i]`` and ``clean[i]`` show the same field of view, pixel for pixel.
    config
        The settings; ``arch`` is the network: ``dncnn``, ``redcnn`` or ``unet``.
    out
        Model folder (``config.yaml`` + ``weights.safetensors``); training logs go to ``out/training``.
    seed
        Seeds initialisation and patch sampling.
    """
    cfg = config
    width = cfg.channels or {"dncnn": 64, "redcnn": 96, "unet": 32}[cfg.arch]
    check_step_memory(batch=cfg.batch_size, pixels=cfg.patch_size**2, width=width)
    noisy, clean = _check_pairs(noisy, clean, cfg.patch_size)
    multiple = build_net(cfg).multiple
    if cfg.patch_size % multiple:
        raise PairlessError(
            f"patch_size {cfg.patch_size} must be a multiple of {multiple} for a {cfg.arch} of depth"
            f" {cfg.depth}; change patch_size (e.g. to {cfg.patch_size // multiple * multiple or multiple})"
        )
    bounds = value_range(clean)
    lo, scale = bounds[0], bounds[1] - bounds[0]
    noisy = [((im - lo) / scale).astype(np.float32) for im in noisy]
    clean = [((im - lo) / scale).astype(np.float32) for im in clean]
    # hold out the last pair when there are enough, else validate on fresh patches of the same pairs
    split = len(noisy) - 1 if len(noisy) >= 4 else len(noisy)
    val_pairs = (noisy[split:], clean[split:]) if split < len(noisy) else (noisy, clean)
    b, p = cfg.batch_size, cfg.patch_size
    train = PairedPatches(
        noisy[:split], clean[:split], patch=p, length=cfg.steps * b, seed=seed, augment=cfg.augment
    )
    val = PairedPatches(*val_pairs, patch=p, length=cfg.val_batches * b, seed=seed + 1, augment="none")
    module = SupervisedModule(cfg, seed=seed)

    def export(best: Path) -> tuple[dict, dict[str, Tensor]]:
        module.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
        return {
            "method": "supervised",
            "supervised": cfg.model_dump(mode="json"),
            "value_range": list(bounds),
            "seed": seed,
        }, module.net.state_dict()

    return train_on_patches(
        module,
        train,
        val,
        config=cfg,
        folder=out,
        export=export,
        record=run_record("supervised", cfg.model_dump(mode="json"), seed=seed, data=[*noisy, *clean]),
        seed=seed,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
    )


def _check_pairs(noisy: list[np.ndarray], clean: list[np.ndarray], patch: int):
    if len(noisy) != len(clean) or not noisy:
        raise PairlessError(
            "supervised training needs the same non-zero number of noisy and clean images "
            f"(got {len(noisy)} and {len(clean)}); pass one clean image per noisy image, in the same order"
        )
    pairs = []
    for i, (x, y) in enumerate(zip(noisy, clean)):
        x, y = np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float32)
        if x.ndim != 2 or x.shape != y.shape:
            raise PairlessError(
                f"pair {i}: noisy shape {x.shape} and clean shape {y.shape} must be the same 2D (YX) shape; "
                "pass aligned 2D slices"
            )
        if min(x.shape) < patch:
            raise PairlessError(
                f"pair {i} is {x.shape[0]}×{x.shape[1]}, smaller than the {patch}-pixel training patches; "
                "use larger images or a smaller patch_size"
            )
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise PairlessError(f"pair {i} contains NaN or Inf; replace those pixels before training")
        pairs.append((x, y))
    return [x for x, _ in pairs], [y for _, y in pairs]


CONFIG = SupervisedConfig
