"""The shipped prior: a Gaussian denoiser trained once on clean public images with synthetic noise.

A bias-free DRUNet-lite (:class:`pairless.nets.prior_net.PriorNet`) takes a noisy image and its
noise σ per pixel (a σ map) and returns the denoised image.  It is trained on clean images ``x`` in
[0, 1] with, per patch, either Gaussian noise of σ uniform in [0, ``sigma_max``] or Poisson-Gaussian
noise (variance ``a·x + b``: gain ``a`` log-uniform in ``pg_gain``, a pedestal ``x0`` and read noise
``s``, so ``b = s² − a·x0``), by the mean squared error

    L(θ) = mean ‖f_θ(y, σ_map) − x‖²,

where ``σ_map`` is what a user can compute: σ itself, or ``√(a·u + b)`` with ``u`` a 5×5 box-smoothed
copy of the noisy patch.  One model serves every noise level and, since it is bias-free (no additive
constant anywhere: ``f(α·y, α·σ) = α·f(y, σ)``), every intensity scale (Mohan et al., ICLR 2020).

The clean data (``DATASETS``): natural images (the 400 BSD crops), fluorescence (the W2S channel-0
400-frame averages of fields of view 1-30) and electron microscopy (the 30 ISBI 2012 slices), mixed
by ``mix``.  Fields of view 31-40 of W2S and BSD68 are never read: they are what the prior is scored
on.  BSD crops 381-400 and W2S fields 26-30 are held out of training for the validation loss that
picks the checkpoint.  ``pairless pretrain`` runs this recipe; a run is resumable and a later run
with more ``steps`` continues it, so training time adds up.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from pairless.config import Config
from pairless.errors import PairlessError
from pairless.nets.prior_net import PriorNet

SMOOTH = 5  # box width of the smoothed noisy image a Poisson-Gaussian σ map is evaluated on
VALIDATION_SIGMAS = (15 / 255, 25 / 255, 50 / 255)


class PriorConfig(Config):
    """The prior's network and training recipe; the defaults are the ``release`` profile's network."""

    widths: tuple[int, ...] = (32, 64, 128, 256)
    blocks: int = Field(1, ge=1)
    patch_size: int = Field(64, ge=16)
    batch_size: int = Field(16, ge=1)
    steps: int = Field(24_000, ge=1)
    lr: float = Field(1e-3, gt=0)
    warmup: float = Field(0.02, ge=0, lt=1)  # share of the steps with a linear warm-up; cosine decay after
    sigma_max: float = Field(55 / 255, gt=0)
    pg_fraction: float = Field(0.5, ge=0, le=1)  # patches with Poisson-Gaussian rather than Gaussian noise
    pg_gain: tuple[float, float] = (0.002, 0.15)
    # sampling weights of the data sets; a set of the user's own, not named here, weighs 1
    mix: dict[str, float] = {"natural": 0.75, "fluorescence": 0.125, "em": 0.125}
    val_every: int = Field(1000, ge=1)
    # bf16 at equal steps is within 0.01 dB of fp32 and twice as fast (benchmarks/prior_architecture.py)
    precision: Literal["32-true", "bf16-mixed"] = "bf16-mixed"

    # release: the recipe's model, hours of training (resumable); quick: minutes; tiny: the tests'
    PROFILES: ClassVar[dict[str, dict]] = {
        "release": {},
        "quick": {"steps": 2000, "val_every": 250},
        "tiny": {"widths": (4, 8), "steps": 4, "val_every": 2, "batch_size": 2, "patch_size": 16},
    }


#: the clean data sets of the recipe: name -> (the files a data folder holds for training, for validation)
DATASETS: dict[str, tuple[str, str]] = {
    "natural": ("test_{001..380}.png", "test_{381..400}.png"),
    "fluorescence": ("avg400_gt/{001..025}.png", "avg400_gt/{026..030}.png"),
    "em": ("*.png", ""),
}
IMAGE_SUFFIXES = (".png", ".tif", ".tiff")
HELD_OUT = 0.1  # of a set of the user's own (any other name): its last images, for the validation loss


def _expand(pattern: str) -> list[str]:
    """``"a_{001..003}.png"`` -> ``["a_001.png", "a_002.png", "a_003.png"]`` (one range, zero-padded)."""
    if "{" not in pattern:
        return [pattern] if pattern else []
    head, rest = pattern.split("{", 1)
    span, tail = rest.split("}", 1)
    first, last = span.split("..")
    return [f"{head}{i:0{len(first)}d}{tail}" for i in range(int(first), int(last) + 1)]


def _split(name: str, folder: Path) -> tuple[list[Path], list[Path]]:
    """The training and validation files of data set ``name`` in ``folder``: the recipe's files for its own
    sets (:data:`DATASETS`), else every image of the folder with the last tenth held out."""
    if not folder.is_dir():
        raise PairlessError(f"--data {name}={folder}: no such folder; give a folder of clean images")
    if name not in DATASETS:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise PairlessError(f"--data {name}={folder}: the folder holds no PNG or TIFF images")
        held = max(1, round(HELD_OUT * len(files))) if len(files) > 1 else 0
        return files[: len(files) - held], files[len(files) - held :]
    found = []
    for pattern in DATASETS[name]:
        files = sorted(folder.glob(pattern)) if "*" in pattern else [folder / n for n in _expand(pattern)]
        missing = [f for f in files if not f.is_file()]
        if missing or (pattern and not files):
            raise PairlessError(
                f"--data {name}={folder}: the recipe's {name} set needs {pattern} there"
                f"{f' ({missing[0].name} is missing)' if missing else ''}; point it at that folder, or give"
                " your own images under another name"
            )
        found.append(files)
    return found[0], found[1]


def read_clean_sets(
    roots: dict[str, Path],
) -> tuple[dict[str, list[np.ndarray]], dict[str, list[np.ndarray]]]:
    """The training and validation images of each data set in ``roots`` (name -> folder), in [0, 1]."""
    from pairless.io import read_image

    def read(files: list[Path]) -> list[np.ndarray]:
        images = []
        for path in files:
            image = read_image(path, axes="YX").data
            if image.dtype.kind not in "ui":
                raise PairlessError(f"{path}: the prior's clean images are 8- or 16-bit integers")
            images.append((image / np.iinfo(image.dtype).max).astype(np.float32))
        return images

    train, val = {}, {}
    for name, folder in roots.items():
        train_files, val_files = _split(name, Path(folder))
        train[name], val[name] = read(train_files), read(val_files)
    return train, val


def smooth(y: Tensor) -> Tensor:
    """The 5×5 box mean a Poisson-Gaussian σ map is evaluated on (the noisy image is all a user has)."""
    return F.avg_pool2d(F.pad(y, (SMOOTH // 2,) * 4, mode="reflect"), SMOOTH, stride=1)


def sigma_map(y: Tensor, *, a: Tensor | float, b: Tensor | float) -> Tensor:
    """``√max(a·u + b, 0)`` with ``u`` the smoothed ``y``: the noise σ per pixel of variance ``a·x + b``."""
    return (a * smooth(y) + b).clamp_min(0).sqrt()


class NoisyPatches(torch.utils.data.Dataset):
    """Batch ``idx``: clean patches of the mixed sets, their noisy copies and σ maps, ``(y, x, σ)``.

    Everything is drawn from a generator seeded by ``(seed, idx)``, so a resumed run draws the same batches.
    """

    def __init__(self, sets: dict[str, list[np.ndarray]], config: PriorConfig, *, length: int, seed: int):
        self.sets = {k: v for k, v in sets.items() if v and config.mix.get(k, 1.0) > 0}
        if not self.sets:
            raise PairlessError(
                f"no training images for the data sets of mix {config.mix}; give their folders"
            )
        weights = np.array([config.mix.get(k, 1.0) for k in self.sets], dtype=np.float64)
        self.names, self.weights = list(self.sets), weights / weights.sum()
        self.config, self.length, self.seed = config, length, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, idx: int) -> tuple[Tensor, Tensor, Tensor]:
        rng = np.random.default_rng([self.seed, idx])
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        c, p, n = self.config, self.config.patch_size, self.config.batch_size
        crops = []
        for _ in range(n):
            images = self.sets[self.names[rng.choice(len(self.names), p=self.weights)]]
            image = images[rng.integers(len(images))]
            if min(image.shape) < p:
                raise PairlessError(f"a clean image of shape {image.shape} is smaller than patch_size {p}")
            r, q = (rng.integers(s - p + 1) for s in image.shape)
            crop = np.rot90(image[r : r + p, q : q + p], rng.integers(4))
            crops.append(crop[:, ::-1] if rng.random() < 0.5 else crop)
        x = torch.from_numpy(np.stack(crops)[:, None].copy())
        return add_noise(x, c, rng=rng, generator=generator)


def add_noise(
    x: Tensor, config: PriorConfig, *, rng: np.random.Generator, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """``(y, x, σ_map)``: each patch of ``x`` with Gaussian or Poisson-Gaussian noise (the module notes)."""
    n = x.shape[0]

    def draw(values) -> Tensor:
        return torch.as_tensor(np.asarray(values, dtype=np.float32)).view(n, 1, 1, 1)

    pg = draw(rng.random(n) < config.pg_fraction) > 0
    sigma = draw(rng.uniform(0, config.sigma_max, n))
    a = draw(np.exp(rng.uniform(*np.log(config.pg_gain), n)))
    x0 = draw(rng.uniform(0, 0.05, n))  # a camera pedestal: fitted W2S frames have b < 0
    s = draw(rng.uniform(0, 10 / 255, n))
    gaussian = x + sigma * torch.randn(x.shape, generator=generator)
    shot = a * torch.poisson((x - x0).clamp_min(0) / a, generator=generator) + x0
    shot = shot + s * torch.randn(x.shape, generator=generator)
    y = torch.where(pg, shot, gaussian)
    return y, x, torch.where(pg, sigma_map(y, a=a, b=s * s - a * x0), sigma.expand_as(x))


def validation_batch(images: dict[str, list[np.ndarray]], config: PriorConfig, *, seed: int) -> list:
    """Fixed noisy crops of the held-out images: Gaussian at σ 15, 25 and 50 (of 255) and Poisson-Gaussian."""
    rng = np.random.default_rng([seed, 7])
    generator = torch.Generator().manual_seed(seed)
    p = config.patch_size
    crops = []
    for image in (im for ims in images.values() for im in ims):
        for r in range(0, image.shape[0] - p + 1, max(p, image.shape[0] // 3)):
            for q in range(0, image.shape[1] - p + 1, max(p, image.shape[1] // 3)):
                crops.append(image[r : r + p, q : q + p])
    if not crops:
        raise PairlessError("no validation images: the prior needs its held-out images to pick a checkpoint")
    x = torch.from_numpy(np.stack(crops)[:, None].copy())
    batches = [
        (x + s * torch.randn(x.shape, generator=generator), x, torch.full_like(x, s))
        for s in VALIDATION_SIGMAS
    ]
    return [*batches, add_noise(x, config, rng=rng, generator=generator)]


class PriorModule(L.LightningModule):
    """MSE of the denoised noisy patches against the clean ones; Adam, warm-up then cosine decay to 1 %."""

    def __init__(self, config: PriorConfig, *, seed: int = 0, init: dict[str, Tensor] | None = None):
        super().__init__()
        self.config = config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = PriorNet(widths=config.widths, blocks=config.blocks)
        if init is not None:
            self.net.load_state_dict(init)
        # channels-last doubles bf16 convolution throughput on AVX-512 CPUs (benchmarks/prior_architecture.py)
        self.net.to(memory_format=torch.channels_last)

    def _denoise(self, y: Tensor, sigma: Tensor) -> Tensor:
        last = torch.channels_last
        return self.net(y.contiguous(memory_format=last), sigma.contiguous(memory_format=last)).float()

    def training_step(self, batch, batch_idx):
        y, x, sigma = batch
        loss = F.mse_loss(self._denoise(y, sigma), x)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch, batch_idx):
        y, x, sigma = batch
        self.log("val_loss", F.mse_loss(self._denoise(y, sigma), x), on_epoch=True, batch_size=len(y))

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.net.parameters(), lr=self.config.lr)
        steps, warm = self.config.steps, max(1, round(self.config.warmup * self.config.steps))

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.01 + 0.99 * 0.5 * (
                1 + math.cos(math.pi * min(step - warm, steps - warm) / max(steps - warm, 1))
            )

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def pretrain(
    roots: dict[str, Path],
    *,
    config: PriorConfig,
    out: Path,
    seed: int = 0,
    init: dict[str, Tensor] | None = None,
    progress: bool = True,
    resume: bool | None = None,
    overwrite: bool = False,
) -> tuple[dict, dict[str, Tensor]]:
    """Train the prior on the clean data sets in ``roots`` (name -> folder, see :data:`DATASETS`) into the
    model folder ``out``; ``init`` starts from given weights (e.g. the shipped prior's)."""
    from pairless.training.engine import check_step_memory, train_model_folder
    from pairless.training.modelio import run_record
    from pairless.training.selfsup import EpochSampler

    check_step_memory(batch=config.batch_size, pixels=config.patch_size**2, width=config.widths[0])
    train_sets, val_sets = read_clean_sets(roots)
    module = PriorModule(config, seed=seed, init=init)
    train = torch.utils.data.DataLoader(
        NoisyPatches(train_sets, config, length=config.val_every, seed=seed),
        batch_size=None,
        sampler=EpochSampler(config.val_every),
    )
    val = torch.utils.data.DataLoader(validation_batch(val_sets, config, seed=seed), batch_size=None)
    data = [im for ims in train_sets.values() for im in ims]

    def export(best: Path) -> tuple[dict, dict[str, Tensor]]:
        checkpoint = torch.load(best, map_location="cpu", weights_only=True)
        weights = {
            k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")
        }
        settings = config.model_dump(mode="json")
        return {
            "method": "prior",
            "prior": settings,
            "seed": seed,
            "best_step": int(checkpoint["global_step"]),
        }, weights

    return train_model_folder(
        module,
        train,
        val,
        folder=out,
        export=export,
        record=run_record(
            "prior", {**config.model_dump(mode="json"), "init": init is not None}, seed=seed, data=data
        ),
        resume=resume,
        overwrite=overwrite,
        max_steps=config.steps,
        val_every_n_steps=min(config.val_every, config.steps),
        seed=seed,
        precision=config.precision,
        progress=progress,
    )


def build(config: dict) -> tuple[PriorConfig, PriorNet]:
    """The settings and an untrained network of a prior model folder's ``config.yaml``."""
    settings = PriorConfig.from_dict(config["prior"])
    return settings, PriorNet(widths=settings.widths, blocks=settings.blocks)


CONFIG = PriorConfig
