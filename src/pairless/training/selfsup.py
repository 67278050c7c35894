"""What every self-supervised method shares: stacks, patches, augmentation, the training module, the denoiser.

A method is an :class:`Objective`: it builds its network and says what the loss of a batch of noisy
patches is.  Everything else is here, written once: images become normalised ``(n, *spatial)``
stacks, random augmented patches are drawn reproducibly (batch ``i`` of a run always holds the same
patches, so a resumed run continues exactly), a fixed set of patches is held out for validation (the
objective's own loss on them picks the best checkpoint: no clean data is needed), Lightning trains
through :func:`pairless.training.engine.fit_module`, and the model folder is read back into a
:class:`NetDenoiser` that predicts tile by tile.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

import lightning as L
import numpy as np
import torch
from pydantic import Field
from torch import nn

from pairless.config import Config
from pairless.denoiser import SPATIAL, Denoiser
from pairless.errors import PairlessError
from pairless.inference.tiling import DEFAULT_TILE
from pairless.training.engine import check_step_memory, rank_and_world, train_model_folder
from pairless.training.modelio import run_record


class SelfSupervisedConfig(Config):
    """What every self-supervised method shares: the network, the patches, the schedule, the precision.

    Each method subclasses it with the settings that make it that method and its own ``PROFILES``;
    :meth:`for_profile` builds one with a profile's settings and a user's overrides on top.
    ``precision``/``channels_last`` ``"auto"`` train in fp32 NCHW (bf16 cost quality on real noise, see
    :func:`resolve_precision`); ``bf16-mixed`` trains with channels-last.
    """

    PROFILES: ClassVar[dict[str, dict]] = {"quick": {}}
    # A 3D step of the 2D batch (16 × 16×64×64 voxels, 27-tap convolutions) costs ~50× a 2D one: the 3D
    # quick profile trains on smaller batches of smaller patches so that a stack trains in minutes.
    PROFILES_3D: ClassVar[dict[str, dict]] = {
        "quick": {"batch_size": 4, "patch_size": 32, "patch_depth": 16, "steps": 1000, "val_every": 100}
    }

    ndim: Literal[2, 3] = 2
    patch_size: int = Field(64, ge=8)
    patch_depth: int = Field(16, ge=8)  # Z extent of 3D patches
    batch_size: int = Field(16, ge=1)
    steps: int = Field(1500, ge=1)
    val_every: int = Field(100, ge=1)
    lr: float = Field(2e-3, gt=0)
    # "step" halves the rate at 3/4 of the run (Zero-Shot Noise2Noise's schedule)
    lr_schedule: Literal["cosine", "plateau", "constant", "step"] = "cosine"
    depth: int = Field(2, ge=1, le=5)
    filters: int = Field(32, ge=1)
    val_fraction: float = Field(0.1, gt=0, lt=1)
    max_val_patches: int = Field(256, ge=1)
    # rare bright structures (a PET scan's lesions) are in few random patches: this share of the patches
    # is drawn around them instead (pairless.training.selfsup.hot_spots), each structure as often as any other
    hot_fraction: float = Field(0.0, ge=0, le=1)
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"

    @classmethod
    def profile_settings(cls, profile: str, overrides: dict) -> dict:
        three_d = cls.PROFILES_3D.get(profile, {}) if overrides.get("ndim") == 3 else {}
        return {**cls.PROFILES[profile], **three_d}


# --------------------------------------------------------------------------------------------------
# The method interface


class Objective:
    """One self-supervised method: its configuration class, its network and its loss.

    Subclasses set ``name`` (the model folder's ``method``) and ``config_class`` and implement
    :meth:`make_net` and :meth:`loss`; the others have defaults that suit most methods.
    """

    name: ClassVar[str]
    title: ClassVar[str]  # for tables and reports
    config_class: ClassVar[type[SelfSupervisedConfig]]
    #: validation patches are repeated until there are this many (a sparse loss needs many draws)
    val_repeats: ClassVar[int] = 1
    #: images per training sample: 2 for a method trained on pairs of independent acquisitions, whose
    #: patches then come as two channels cut at the same place (``(B, 2, *spatial)``)
    views: ClassVar[int] = 1

    def __init__(self, config: SelfSupervisedConfig):
        self.config = config

    def make_net(self) -> nn.Module:
        """The network; it has ``ndim`` and ``multiple`` (every size it sees is a multiple of this)."""
        raise NotImplementedError

    def loss(
        self, net: nn.Module, batch: torch.Tensor, *, generator: torch.Generator, progress: float
    ) -> torch.Tensor:
        """The training loss of ``batch`` ``(B, views, *spatial)`` of normalised noisy patches.

        ``progress`` is the fraction of the run done (for ramps); randomness only from ``generator``.
        """
        raise NotImplementedError

    def validation_loss(
        self, net: nn.Module, batch: torch.Tensor, *, generator: torch.Generator
    ) -> torch.Tensor:
        """The criterion that picks the best checkpoint, without clean data (default: the loss at the end)."""
        return self.loss(net, batch, generator=generator, progress=1.0)

    def augment(self) -> bool:
        """Whether training patches may be rotated by 90° (not when the noise has a direction)."""
        return True

    def check_patch(self, patch: tuple[int, ...], multiple: int) -> None:
        if any(p % multiple for p in patch):
            raise PairlessError(
                f"patch size {patch} must be a multiple of {multiple} for this network; change "
                "patch_size/patch_depth in the configuration"
            )

    def prepare(self, stacks: list[np.ndarray], *, mean: float, std: float) -> dict:
        """What is learned from the (unnormalised) training data before training; kept in the model folder."""
        return {}

    def denoiser(self, net: nn.Module, settings: dict, **prediction_options) -> NetDenoiser:
        """The denoiser of a trained ``net``; ``settings`` is the model folder's config."""
        return NetDenoiser(net, normalisation=settings["normalisation"], **prediction_options)


# --------------------------------------------------------------------------------------------------
# Data: normalised stacks, random augmented patches, a fixed validation split


def as_stacks(images: list[np.ndarray], *, axes: str, ndim: int) -> list[np.ndarray]:
    """Each image as ``(n, *spatial)`` float32: every non-spatial axis (S, T, C, and Z for 2D) is a batch
    axis."""
    if not images:
        raise PairlessError("no training images given; pass at least one image")
    if not axes or not set(axes) <= set("STCZYX") or len(set(axes)) != len(axes) or not axes.endswith("YX"):
        raise PairlessError(
            f"axes {axes!r} are not valid; use letters from STCZYX ending in YX, e.g. YX, SYX, ZYX"
        )
    spatial = SPATIAL[-ndim:]
    if ndim == 3 and "Z" not in axes:
        raise PairlessError(
            f"a 3D model needs a Z axis but axes are {axes!r}; pass --axes ZYX or train a 2D model"
        )
    stacks = []
    for i, image in enumerate(images):
        image = np.asarray(image)
        if image.ndim != len(axes):
            raise PairlessError(
                f"image {i} has {image.ndim} dimensions (shape {image.shape}) but axes {axes!r} name"
                f" {len(axes)}; pass the matching --axes"
            )
        if image.size == 0:
            raise PairlessError(f"image {i} is empty (shape {image.shape}); remove it from the inputs")
        if not (np.issubdtype(image.dtype, np.number) or image.dtype == bool) or np.iscomplexobj(image):
            raise PairlessError(
                f"image {i} has unsupported dtype {image.dtype}; convert it to integers or floats"
            )
        batch = [a for a in axes if a not in spatial]
        moved = np.transpose(image, [axes.index(a) for a in batch + list(spatial)])
        stack = moved.reshape(-1, *moved.shape[len(batch) :]).astype(np.float32)
        if not np.isfinite(stack).all():
            raise PairlessError(
                f"image {i} contains NaN or Inf; replace them (e.g. with the background value)"
            )
        stacks.append(stack)
    return stacks


def paired_stacks(pairs: list, *, axes: str, ndim: int, views: int = 2) -> list[np.ndarray]:
    """Each pair (tuple) of registered images as one ``(n, views, *spatial)`` stack."""
    if not pairs:
        raise PairlessError(
            "no training pairs given; pass at least one pair of acquisitions of the same object"
        )
    stacks = []
    for i, pair in enumerate(pairs):
        if isinstance(pair, np.ndarray) or len(pair) != views:
            raise PairlessError(
                f"training item {i} is not a pair of images; pass {views} images of the same object "
                "(e.g. --pairs A1 A2 B1 B2)"
            )
        members = as_stacks(list(pair), axes=axes, ndim=ndim)
        if len({m.shape for m in members}) > 1:
            raise PairlessError(
                f"the images of pair {i} differ in shape {[m.shape for m in members]}; pair "
                "acquisitions of the same object on the same grid"
            )
        stacks.append(np.stack(members, axis=1))
    return stacks


def mean_std(stacks: list[np.ndarray]) -> tuple[float, float]:
    """Mean and standard deviation over every pixel of every stack (float64 sums: no overflow, no drift)."""
    count = sum(s.size for s in stacks)
    mean = sum(float(s.sum(dtype=np.float64)) for s in stacks) / count
    std = math.sqrt(sum(float(np.square(s - mean, dtype=np.float64).sum()) for s in stacks) / count)
    return mean, std


class PatchSampler:
    """Random patches from normalised stacks, avoiding a fixed set of validation cells.

    A stack is ``(n, *spatial)``, or ``(n, views, *spatial)`` for registered acquisitions of one
    object: every patch then holds all views at the same place (and the same rotation and flips).
    """

    def __init__(
        self,
        stacks: list[np.ndarray],
        patch: tuple[int, ...],
        *,
        val_fraction: float,
        max_val: int,
        seed: int,
        hot_fraction: float = 0.0,
    ):
        self.stacks, self.patch, self.hot_fraction = stacks, patch, hot_fraction
        self.views = stacks[0].shape[1] if stacks[0].ndim == len(patch) + 2 else 1
        for i, s in enumerate(stacks):
            if any(n < p for n, p in zip(s.shape[-len(patch) :], patch)):
                raise PairlessError(
                    f"image {i} (spatial shape {s.shape[1:]}) is smaller than the training patch {patch}; "
                    "set a smaller patch_size (and patch_depth) in the configuration"
                )
        rng = np.random.default_rng([seed, 1])
        self.cells = [tuple(n // p for n, p in zip(s.shape[-len(patch) :], patch)) for s in stacks]
        counts = [len(s) * math.prod(c) for s, c in zip(stacks, self.cells)]
        total = sum(counts)
        n_val = min(max_val, max(1, round(val_fraction * total)))
        if total < 2:
            raise PairlessError(
                f"the images hold only one {patch} patch; give larger or more images, or a smaller patch_size"
            )
        chosen = rng.choice(total, size=n_val, replace=False)
        self.val_cells = [np.zeros((len(s), *c), dtype=bool) for s, c in zip(stacks, self.cells)]
        bounds = np.cumsum([0] + counts)
        for flat in chosen:
            i = int(np.searchsorted(bounds, flat, side="right") - 1)
            self.val_cells[i].reshape(-1)[flat - bounds[i]] = True
        # sample images in proportion to their number of possible patch positions
        weights = np.array(
            [len(s) * math.prod(n - p + 1 for n, p in zip(s.shape[-len(patch) :], patch)) for s in stacks],
            float,
        )
        self.weights = weights / weights.sum()
        self.hot = [hot_spots(s, len(patch)) for s in stacks] if hot_fraction > 0 else []
        self.spots = [(i, k) for i, regions in enumerate(self.hot) for k in range(len(regions))]

    def validation_patches(self) -> np.ndarray:
        out = []
        for stack, cells in zip(self.stacks, self.val_cells):
            for j, *c in np.argwhere(cells):
                out.append(stack[(j, ..., *(slice(k * p, (k + 1) * p) for k, p in zip(c, self.patch)))])
        return np.stack(out).reshape(len(out), self.views, *self.patch)

    def _free(self, i: int, j: int, corner: np.ndarray) -> bool:
        lo = corner // self.patch
        hi = np.minimum((corner + np.array(self.patch) - 1) // self.patch, np.array(self.cells[i]) - 1)
        block = self.val_cells[i][(j, *(slice(a, b + 1) for a, b in zip(lo, hi)))]
        return not block.any()

    def draw(self, count: int, rng: np.random.Generator, *, rotate: bool) -> np.ndarray:
        out = np.empty((count, self.views, *self.patch), dtype=np.float32)
        k = 0
        for _ in range(100 * count):
            if self.spots and rng.random() < self.hot_fraction:
                i, j, corner = self._near_hot_spot(rng)
            else:
                i = rng.choice(len(self.stacks), p=self.weights)
                j = rng.integers(len(self.stacks[i]))
                corner = np.array(
                    [
                        rng.integers(n - p + 1)
                        for n, p in zip(self.stacks[i].shape[-len(self.patch) :], self.patch)
                    ]
                )
            stack = self.stacks[i]
            if not self._free(i, j, corner):
                continue
            patch = stack[(j, ..., *(slice(c, c + p) for c, p in zip(corner, self.patch)))]
            if rotate:
                patch = np.rot90(patch, rng.integers(4), axes=(-2, -1))
            for axis in (-1, -2):
                if rng.integers(2):
                    patch = np.flip(patch, axis=axis)
            out[k] = patch
            k += 1
            if k == count:
                return out
        raise PairlessError(
            "could not find training patches outside the validation set; use more or larger images"
        )

    def _near_hot_spot(self, rng: np.random.Generator) -> tuple[int, int, np.ndarray]:
        """A patch holding a voxel of one bright structure (structures equally likely, voxels too)."""
        i, k = self.spots[rng.integers(len(self.spots))]
        j, *voxel = self.hot[i][k][rng.integers(len(self.hot[i][k]))]
        shape = self.stacks[i].shape[-len(self.patch) :]
        corner = np.array(
            [min(max(v - rng.integers(p), 0), n - p) for v, p, n in zip(voxel, self.patch, shape)]
        )
        return i, int(j), corner


def hot_spots(stack: np.ndarray, ndim: int, *, quantile: float = 0.99) -> list[np.ndarray]:
    """The bright structures of a stack: connected regions above its ``quantile`` after a light blur.

    Returns one ``(k, 1 + ndim)`` array of voxel indices ``(image, *spatial)`` per region.  Each
    region gets the same share of the "hot" patches, so a small lesion is seen as often as a large one.
    """
    from scipy import ndimage

    image = stack if stack.ndim == ndim + 1 else stack.mean(axis=1)  # the views' mean for paired stacks
    smooth = ndimage.gaussian_filter(image, (0,) + (1.0,) * ndim)
    within_one_image = np.zeros((3,) * (ndim + 1), bool)
    within_one_image[1] = True
    labels, count = ndimage.label(smooth > np.quantile(smooth, quantile), structure=within_one_image)
    return [np.argwhere(labels == k) for k in range(1, count + 1)] if count else []


class PatchBatches(torch.utils.data.Dataset):
    """Batch ``idx`` of the whole run, drawn from a generator seeded by ``(seed, idx)``: resumable and
    reproducible."""

    def __init__(self, sampler: PatchSampler, *, batch_size: int, length: int, seed: int, rotate: bool):
        self.sampler, self.batch_size, self.length, self.seed, self.rotate = (
            sampler,
            batch_size,
            length,
            seed,
            rotate,
        )

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, idx: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, 2, idx])
        return torch.from_numpy(self.sampler.draw(self.batch_size, rng, rotate=self.rotate))


class EpochSampler(torch.utils.data.Sampler):
    """Indices ``epoch * n … epoch * n + n - 1``; Lightning calls :meth:`set_epoch` at each epoch.

    In a run of ``w`` processes, rank ``r`` takes batch ``i * w + r`` for its step ``i``: each rank
    draws its own patches, and together they draw the batches one process would in ``w`` times the steps.
    """

    def __init__(self, n: int):
        self.n, self.epoch = n, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        rank, world = rank_and_world()
        return iter(range(self.epoch * self.n * world + rank, (self.epoch + 1) * self.n * world, world))


# --------------------------------------------------------------------------------------------------
# Lightning module and training


def conv_ndim(net: nn.Module) -> int:
    """The dimension of ``net``'s convolutions: its ``ndim`` unless it says otherwise
    (:mod:`pairless.nets.context`)."""
    return getattr(net, "conv_ndim", net.ndim)


def memory_format(ndim: int, channels_last: bool) -> torch.memory_format:
    if not channels_last:
        return torch.contiguous_format
    return torch.channels_last if ndim == 2 else torch.channels_last_3d


class SelfSupervisedModule(L.LightningModule):
    """Trains ``objective``'s network on its loss; validates with fixed random draws (keyed by seed and
    batch)."""

    def __init__(self, net: nn.Module, objective: Objective, *, seed: int = 0, channels_last: bool = False):
        super().__init__()
        self.net, self.objective, self.config, self.seed = net, objective, objective.config, seed
        # one-channel inputs are in every memory format at once: only the network's weights need converting
        self.net.to(memory_format=memory_format(conv_ndim(net), channels_last))

    def _generator(self, *key: int) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed(int(np.random.SeedSequence([self.seed, *key]).generate_state(1)[0]))
        return g

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        # the draws are keyed like the batches (see EpochSampler), so ranks never share one
        generator = self._generator(3, self.global_step * self.trainer.world_size + self.global_rank)
        loss = self.objective.loss(
            self.net, batch, generator=generator, progress=self.global_step / self.config.steps
        )
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        loss = self.objective.validation_loss(self.net, batch, generator=self._generator(4, batch_idx))
        # every rank validates the same patches under the same draws: the mean over ranks is each one's value
        self.log("val_loss", loss, prog_bar=True, batch_size=len(batch), sync_dist=True)

    def configure_optimizers(self):
        c = self.config
        opt = torch.optim.Adam(self.parameters(), lr=c.lr, fused=True)
        if c.lr_schedule == "constant":
            return opt
        if c.lr_schedule == "step":
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, round(0.75 * c.steps)), gamma=0.5)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        if c.lr_schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=c.steps, eta_min=c.lr * 0.01)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        # CSBDeep's schedule: halve on a 10-validation plateau
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=10)
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": sched, "monitor": "val_loss", "interval": "epoch"},
        }


def resolve_precision(config: SelfSupervisedConfig, *, convolutions: int | None = None) -> tuple[str, bool]:
    """``(precision, channels_last)``: ``auto`` trains in fp32 NCHW, on every CPU and GPU.

    bf16-mixed trains 2-2.5x faster per step on a CPU with AVX-512 bf16, but it cost quality on real noise
    (issue 23: N2V quick on real widefield frames 25.56 dB in bf16 against 26.47 in fp32 on a machine with
    AMX; ``benchmarks/precision_real_noise.py`` measures it on the machine that runs it: on one without
    AMX, one seed, bf16 − fp32 was −0.03 dB for Ne2Ne and +0.92 for N2V), so it is used only when asked
    for, until every method is measured on more seeds and both kinds of CPU. channels-last only pays off
    together with bf16 (fp32 channels-last convolutions are far slower than NCHW on a CPU). 3D
    convolutions refuse bf16 on a CPU: with bf16-mixed (torch 2.13, oneDNN, AVX-512 bf16) a 3D U-Net's
    weights turned NaN within 30 steps.
    ``convolutions`` is the network's convolution dimension where it differs from ``config.ndim``
    (:func:`conv_ndim`).
    """
    precision = "32-true" if config.precision == "auto" else config.precision
    on_gpu = torch.cuda.is_available()
    if precision == "16-mixed" and not on_gpu:
        raise PairlessError("precision 16-mixed needs a GPU; use bf16-mixed or 32-true on a CPU")
    if precision == "bf16-mixed" and not on_gpu and (convolutions or config.ndim) == 3:
        raise PairlessError(
            "precision bf16-mixed diverges (NaN weights) for 3D networks on a CPU; use precision 32-true"
        )
    channels_last = {"on": True, "off": False, "auto": precision != "32-true"}[config.channels_last]
    return precision, channels_last


def train(
    objective: Objective,
    images: list[np.ndarray],
    *,
    axes: str,
    out: Path,
    seed: int = 0,
    progress: bool = True,
    resume: bool | None = None,
    overwrite: bool = False,
    devices: int = 1,
    callbacks: Sequence[L.Callback] = (),
) -> tuple[dict, dict[str, torch.Tensor]] | None:
    """Train ``objective`` on ``images`` (all with the same ``axes``) and write a model folder to ``out``.

    For an objective trained on pairs (``views == 2``), each item of ``images`` is a pair of
    registered acquisitions of one object with independent noise (e.g. two halves of a scan).

    The folder receives ``config.yaml`` (method, settings, normalisation, what :meth:`Objective.prepare`
    learned), ``weights.safetensors`` from the best-validation checkpoint, ``training_log.csv``,
    ``loss.png`` and ``checkpoints/`` (for ``resume``).  Returns the folder's config and weights.

    ``devices > 1`` (or starting under ``torchrun``) trains data-parallel (``pairless.training.engine``), each
    process on its own batches of ``batch_size``; only global rank 0 writes the folder and returns
    its contents, the other ranks return ``None``.  ``callbacks`` go to the Lightning trainer
    (:func:`pairless.training.engine.fit_module`).
    """

    config = objective.config
    out = Path(out)
    patch_pixels = config.patch_size**2 * (config.patch_depth if config.ndim == 3 else 1)
    check_step_memory(batch=config.batch_size * objective.views, pixels=patch_pixels, width=config.filters)
    stacks = (
        as_stacks(images, axes=axes, ndim=config.ndim)
        if objective.views == 1
        else paired_stacks(images, axes=axes, ndim=config.ndim, views=objective.views)
    )
    mean, std = mean_std(stacks)
    if std == 0:
        raise PairlessError(
            f"the training images are constant (std 0); {objective.name} needs images with noise"
        )
    learned = objective.prepare(stacks, mean=mean, std=std)
    raw_stacks, stacks = stacks, [((s - mean) / std).astype(np.float32) for s in stacks]
    patch = (
        (config.patch_depth, config.patch_size, config.patch_size)
        if config.ndim == 3
        else (config.patch_size,) * 2
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = objective.make_net()
    objective.check_patch(patch, net.multiple)
    sampler = PatchSampler(
        stacks,
        patch,
        val_fraction=config.val_fraction,
        max_val=config.max_val_patches,
        seed=seed,
        hot_fraction=config.hot_fraction,
    )
    train = torch.utils.data.DataLoader(
        PatchBatches(
            sampler,
            batch_size=config.batch_size,
            length=config.val_every,
            seed=seed,
            rotate=objective.augment(),
        ),
        batch_size=None,
        sampler=EpochSampler(config.val_every),
    )
    held_out = sampler.validation_patches()
    held_out = np.concatenate([held_out] * math.ceil(objective.val_repeats / len(held_out)))
    val = torch.utils.data.DataLoader(torch.from_numpy(held_out), batch_size=config.batch_size)
    precision, channels_last = resolve_precision(config, convolutions=conv_ndim(net))
    module = SelfSupervisedModule(net, objective, seed=seed, channels_last=channels_last)

    def export(best: Path) -> tuple[dict, dict[str, torch.Tensor]]:
        checkpoint = torch.load(best, map_location="cpu", weights_only=True)
        weights = {
            k.removeprefix("net."): v.contiguous()
            for k, v in checkpoint["state_dict"].items()
            if k.startswith("net.")
        }
        return {
            "method": objective.name,
            **config.model_dump(mode="json"),
            "normalisation": {"mean": mean, "std": std},
            **learned,
            "axes": axes,
            "seed": seed,
            "world_size": rank_and_world()[1],
            "best_step": int(checkpoint["global_step"]),
        }, weights

    return train_model_folder(
        module,
        train,
        val,
        folder=out,
        export=export,
        record=run_record(objective.name, config.model_dump(mode="json"), seed=seed, data=raw_stacks),
        resume=resume,
        overwrite=overwrite,
        max_steps=config.steps,
        val_every_n_steps=config.val_every,
        seed=seed,
        precision=precision,
        progress=progress,
        devices=devices,
        use_distributed_sampler=False,  # EpochSampler gives each rank its own batches
        callbacks=callbacks,
    )


# --------------------------------------------------------------------------------------------------
# Prediction


class NetDenoiser(Denoiser):
    """A trained network with its normalisation; tiles large images through ``pairless.inference.tiling``."""

    def __init__(
        self,
        net: nn.Module,
        *,
        normalisation: dict,
        tile: int = DEFAULT_TILE,
        overlap: int = 32,
        tta: bool = False,
    ):
        super().__init__()
        self.net = net.eval()
        self.spatial_ndim = net.ndim
        self.mean, self.std = float(normalisation["mean"]), float(normalisation["std"])
        self.tile, self.overlap, self.tta = tile, overlap, tta

    def forward(self, y: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
        if y.ndim != 2 + self.spatial_ndim:
            raise PairlessError(
                f"this {self.spatial_ndim}D model needs (B, 1, {', '.join(SPATIAL[-self.spatial_ndim :])})"
                f" input, got shape {tuple(y.shape)}"
            )
        x = (y.float() - self.mean) / self.std
        with torch.no_grad():
            out = self._run(x)
        return out * self.std + self.mean

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        from pairless.inference.tiling import predict_tiled

        return predict_tiled(
            self.net, x, tile=self.tile, overlap=self.overlap, tta=self.tta, multiple=self.net.multiple
        )


def load_denoiser(
    cls: type[Objective], config: dict, weights: dict[str, torch.Tensor], **prediction_options
) -> NetDenoiser:
    """Rebuild the denoiser of a model folder that :func:`train` wrote for the objective ``cls``."""
    settings = cls.config_class.from_dict(
        {k: v for k, v in config.items() if k in cls.config_class.model_fields}
    )
    objective = cls(settings)
    net = objective.make_net()
    try:
        net.load_state_dict(weights)
    except RuntimeError as err:
        raise PairlessError(
            f"the model weights do not match its config.yaml ({str(err).splitlines()[0]}); the model folder"
            " is damaged: train the model again"
        ) from None
    return objective.denoiser(net, config, **prediction_options)
