"""Supervised reference denoisers: DnCNN, RED-CNN and a U-Net trained on clean/noisy *pairs*.

DnCNN and RED-CNN are the upper reference rows of seed 002's Table 2: what a network of that size
reaches when the clean image of every noisy training image is known; the U-Net is the option that
sees far enough (a 107-px window at depth 3) for noise correlated over tens of pixels (EM scan streaks).  Training
minimises the mean squared error between the network's output on a noisy patch and the aligned
clean patch,

    L(θ) = mean ‖f_θ(x) - y‖²,

with Adam and a cosine learning-rate decay, on random aligned patches (with the same random
transform applied to both; ``augment`` restricts it to flips when the noise has a direction, since
a 90° turn makes vertical streaks that never occur at test time).  Intensities are mapped linearly by the clean training set's
[min, max] to [0, 1] (RED-CNN's final ReLU needs the clean floor at 0) and mapped back afterwards.
The weights kept are those of the best validation loss.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from pairless.config import SupervisedConfig
from pairless.denoiser import Denoiser
from pairless.errors import PairlessError
from pairless.predict import DEFAULT_TILE

ARCHS = ("dncnn", "redcnn", "unet")
AUGMENTS = {  # (allowed quarter turns, may flip up-down, may flip left-right)
    "dihedral": (4, True, True),
    "flips": (1, True, True),
    "updown": (1, True, False),
    "none": (1, False, False),
}
PROFILES = ("quick", "paper")


def profile_config(profile: str, arch: str) -> SupervisedConfig:
    """``paper``: the official ISCL demo's budget (batch 64 of 64×64, 8k iterations), full networks.
    ``quick``: a CPU-minutes run with narrower networks, small batches and bf16, long enough to
    converge (2500 steps: see the measurement in the comment below)."""
    if arch not in ARCHS:
        raise PairlessError(f"unknown architecture {arch!r}; use one of {', '.join(ARCHS)}")
    lr = 1e-4 if arch == "redcnn" else 1e-3  # RED-CNN has no normalisation layers: a smaller step
    if profile == "paper":
        return SupervisedConfig(arch=arch, lr=lr)
    if profile == "quick":
        # 2500 steps is converged (EM study, fold 0, additive charge noise, one core): U-Net 23.80 dB
        # after 2500 steps, 23.69 after 5000 (its validation loss flat from ~2000 on); the old 300
        # steps left DnCNN at the Gaussian filter's level
        return SupervisedConfig(
            arch=arch,
            channels=16 if arch == "unet" else 32,
            depth={"dncnn": 10, "unet": 3}.get(arch),
            patch_size=64 if arch == "unet" else 48,
            batch_size=8,
            steps=2500,
            lr=3 * lr,
            val_every=250,
            val_batches=8,
            precision="bf16-mixed",
        )
    raise PairlessError(f"unknown profile {profile!r}; use one of {', '.join(PROFILES)}")


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


class PairedPatches(torch.utils.data.Dataset):
    """``length`` aligned (noisy, clean) patches; item ``i`` depends only on ``(seed, i)``.

    ``augment`` (a key of :data:`AUGMENTS`) names the transforms drawn, the same for both images.
    """

    def __init__(
        self, noisy: list[np.ndarray], clean: list[np.ndarray], *, patch: int, length: int, seed: int,
        augment: str = "dihedral",
    ):
        if augment not in AUGMENTS:
            raise PairlessError(f"unknown augmentation {augment!r}; use one of {', '.join(AUGMENTS)}")
        self.noisy, self.clean, self.patch, self.length, self.seed = noisy, clean, patch, length, seed
        self.augment = AUGMENTS[augment]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        rng = np.random.default_rng((self.seed, i))
        k = rng.integers(len(self.noisy))
        h, w = self.noisy[k].shape
        r, c = rng.integers(0, h - self.patch + 1), rng.integers(0, w - self.patch + 1)
        window = (slice(r, r + self.patch), slice(c, c + self.patch))
        quarter_turns, may_flip_ud, may_flip_lr = self.augment
        turns = int(rng.integers(quarter_turns))
        flip_ud, flip_lr = may_flip_ud and bool(rng.integers(2)), may_flip_lr and bool(rng.integers(2))
        pair = []
        for image in (self.noisy[k], self.clean[k]):
            p = np.rot90(image[window], turns)
            p = p[::-1] if flip_ud else p
            pair.append(torch.from_numpy(np.ascontiguousarray(p[:, ::-1] if flip_lr else p))[None])
        return pair[0], pair[1]


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

    def __init__(self, net: nn.Module, *, value_range: tuple[float, float], tile=DEFAULT_TILE, overlap=32, tta=False):
        super().__init__()
        self.net = net.eval()
        self.lo, self.hi = value_range
        self.tile, self.overlap, self.tta = tile, overlap, tta

    def forward(self, y: Tensor, sigma: float | None = None) -> Tensor:
        from pairless.predict import predict_tiled

        scale = self.hi - self.lo
        x = (y.float() - self.lo) / scale
        out = predict_tiled(
            self.net, x, tile=self.tile, overlap=self.overlap, tta=self.tta, multiple=self.net.multiple
        )
        return (out * scale + self.lo).to(y.dtype)


def load_denoiser(config: dict, weights: dict[str, Tensor], *, tile=DEFAULT_TILE, overlap=32, tta=False) -> Denoiser:
    """Rebuild a :class:`SupervisedDenoiser` from a model folder's config and weights."""
    cfg = SupervisedConfig.from_dict(config["supervised"])
    net = build_net(cfg)
    try:
        net.load_state_dict(weights)
    except RuntimeError as err:
        raise PairlessError(
            f"the weights do not fit a {cfg.arch} network ({str(err).splitlines()[0]}); "
            f"the model folder is damaged: train it again with `pairless fit supervised`"
        ) from None
    lo, hi = config["value_range"]
    return SupervisedDenoiser(net, value_range=(float(lo), float(hi)), tile=tile, overlap=overlap, tta=tta)


def fit_supervised(
    noisy: list[np.ndarray],
    clean: list[np.ndarray],
    *,
    arch: str,
    out: Path,
    profile: str = "quick",
    config: SupervisedConfig | None = None,
    seed: int = 0,
    progress: bool = True,
) -> Denoiser:
    """Train DnCNN, RED-CNN or a U-Net on aligned pairs; write the model folder ``out``; return it loaded.

    Parameters
    ----------
    noisy, clean
        2D (YX) images; ``noisy[i]`` and ``clean[i]`` show the same field of view, pixel for pixel.
    arch
        ``dncnn``, ``redcnn`` or ``unet``.
    out
        Model folder (``config.yaml`` + ``weights.safetensors``); training logs go to ``out/training``.
    profile
        ``quick`` or ``paper`` (see :func:`profile_config`); ignored when ``config`` is given,
        except that ``arch`` always sets the architecture.
    seed
        Seeds initialisation and patch sampling.
    """
    from pairless.modelio import save_model_folder
    from pairless.train import fit_module

    base = config if config is not None else profile_config(profile, arch)
    cfg = SupervisedConfig.from_dict({**base.model_dump(), "arch": arch})
    noisy, clean = _check_pairs(noisy, clean, cfg.patch_size)
    multiple = build_net(cfg).multiple
    if cfg.patch_size % multiple:
        raise PairlessError(
            f"patch_size {cfg.patch_size} must be a multiple of {multiple} for a {cfg.arch} of depth {cfg.depth}; "
            f"change patch_size (e.g. to {cfg.patch_size // multiple * multiple or multiple})"
        )
    value_range = _value_range(clean)
    lo, scale = value_range[0], value_range[1] - value_range[0]
    noisy = [((im - lo) / scale).astype(np.float32) for im in noisy]
    clean = [((im - lo) / scale).astype(np.float32) for im in clean]
    # hold out the last pair when there are enough, else validate on fresh patches of the same pairs
    split = len(noisy) - 1 if len(noisy) >= 4 else len(noisy)
    val_pairs = (noisy[split:], clean[split:]) if split < len(noisy) else (noisy, clean)
    b, p = cfg.batch_size, cfg.patch_size
    train = PairedPatches(noisy[:split], clean[:split], patch=p, length=cfg.steps * b, seed=seed, augment=cfg.augment)
    val = PairedPatches(*val_pairs, patch=p, length=cfg.val_batches * b, seed=seed + 1, augment="none")
    module = SupervisedModule(cfg, seed=seed)
    out = Path(out)
    best = fit_module(
        module,
        torch.utils.data.DataLoader(train, batch_size=b, drop_last=True),
        torch.utils.data.DataLoader(val, batch_size=b),
        out_dir=out / "training",
        max_steps=cfg.steps,
        val_every_n_steps=min(cfg.val_every, cfg.steps),
        seed=seed,
        precision=cfg.precision,
        progress=progress,
    )
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    save_model_folder(
        out,
        config={
            "method": "supervised",
            "supervised": cfg.model_dump(mode="json"),
            "value_range": list(value_range),
            "seed": seed,
        },
        weights=module.net.state_dict(),
    )
    from pairless.modelio import load_denoiser as load_model_folder

    return load_model_folder(out)


def _check_pairs(noisy: list[np.ndarray], clean: list[np.ndarray], patch: int):
    if len(noisy) != len(clean) or not noisy:
        raise PairlessError(
            f"supervised training needs the same non-zero number of noisy and clean images "
            f"(got {len(noisy)} and {len(clean)}); pass one clean image per noisy image, in the same order"
        )
    pairs = []
    for i, (x, y) in enumerate(zip(noisy, clean)):
        x, y = np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float32)
        if x.ndim != 2 or x.shape != y.shape:
            raise PairlessError(
                f"pair {i}: noisy shape {x.shape} and clean shape {y.shape} must be the same 2D (YX) shape; "
                f"pass aligned 2D slices"
            )
        if min(x.shape) < patch:
            raise PairlessError(
                f"pair {i} is {x.shape[0]}×{x.shape[1]}, smaller than the {patch}-pixel training patches; "
                f"use larger images or a smaller patch_size"
            )
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise PairlessError(f"pair {i} contains NaN or Inf; replace those pixels before training")
        pairs.append((x, y))
    return [x for x, _ in pairs], [y for _, y in pairs]


def _value_range(images: list[np.ndarray]) -> tuple[float, float]:
    lo, hi = min(float(im.min()) for im in images), max(float(im.max()) for im in images)
    return (lo, hi) if hi > lo else (lo - 1.0, lo + 1.0)


def read_pairs(noisy_dir: Path, clean_dir: Path) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Read aligned pairs from two folders, matched by file name without suffix (``a.tif`` ↔ ``a.png``).

    Stacks are split into 2D slices (every axis before Y and X is a batch axis).  Returns noisy
    slices, clean slices and the matched names; unmatched files are an error that names them.
    """
    from pairless.io import read_image

    def by_stem(folder: Path) -> dict[str, Path]:
        if not Path(folder).is_dir():
            raise PairlessError(f"{str(folder)!r} is not a folder; pass a folder of images")
        files = [p for p in sorted(Path(folder).iterdir()) if not p.name.startswith(".")]
        return {p.name[: -len("".join(p.suffixes))] if p.suffixes else p.name: p for p in files}

    noisy_files, clean_files = by_stem(noisy_dir), by_stem(clean_dir)
    only_noisy = sorted(set(noisy_files) - set(clean_files))
    only_clean = sorted(set(clean_files) - set(noisy_files))
    if only_noisy or only_clean:
        raise PairlessError(
            f"pairs are matched by file name, but {', '.join(only_noisy) or 'none'} (noisy) and "
            f"{', '.join(only_clean) or 'none'} (clean) have no partner; give each noisy image a clean one of the same name"
        )
    if not noisy_files:
        raise PairlessError(f"{str(noisy_dir)!r} holds no images; pass folders of paired images")
    noisy, clean = [], []
    for name in sorted(noisy_files):
        x, y = read_image(noisy_files[name]), read_image(clean_files[name])
        if x.data.shape != y.data.shape:
            raise PairlessError(
                f"{name}: noisy shape {x.data.shape} differs from clean shape {y.data.shape}; pairs must be aligned"
            )
        noisy += list(x.data.reshape(-1, *x.data.shape[-2:]).astype(np.float32))
        clean += list(y.data.reshape(-1, *y.data.shape[-2:]).astype(np.float32))
    return noisy, clean, sorted(noisy_files)
