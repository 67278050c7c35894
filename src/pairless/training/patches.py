"""Patch datasets for training on two sets of 2D images: aligned pairs (supervised) or unpaired sets.

Item ``i`` of a run depends only on ``(seed, i)``, so a resumed run draws the same patches.  (The
self-supervised methods draw from one set, in :mod:`pairless.training.selfsup`.)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from pairless.errors import PairlessError

AUGMENTS = {  # (allowed quarter turns, may flip up-down, may flip left-right)
    "dihedral": (4, True, True),
    "flips": (1, True, True),
    "updown": (1, True, False),
    "none": (1, False, False),
}


def value_range(images: list[np.ndarray]) -> tuple[float, float]:
    """The images' [min, max]; a constant set gets [v - 1, v + 1], so that a map to [0, 1] is defined."""
    lo, hi = min(float(im.min()) for im in images), max(float(im.max()) for im in images)
    return (lo, hi) if hi > lo else (lo - 1.0, lo + 1.0)


class PairedPatches(torch.utils.data.Dataset):
    """``length`` aligned (noisy, clean) patches; item ``i`` depends only on ``(seed, i)``.

    ``augment`` (a key of :data:`AUGMENTS`) names the transforms drawn, the same for both images.
    """

    def __init__(
        self,
        noisy: list[np.ndarray],
        clean: list[np.ndarray],
        *,
        patch: int,
        length: int,
        seed: int,
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


class UnpairedPatches(torch.utils.data.Dataset):
    """Item i: a random patch of the noisy set and an independent one of the clean set, each in a
    random one of the 8 rotations/flips (``augmentation="dihedral"``) or of the 4 that keep the axes
    (``"flips"``).  Draws depend only on ``(seed, i)``."""

    def __init__(
        self,
        noisy: list[np.ndarray],
        clean: list[np.ndarray],
        *,
        patch: int,
        length: int,
        seed: int,
        augmentation: str = "dihedral",
    ):
        self.noisy, self.clean, self.patch, self.length, self.seed = noisy, clean, patch, length, seed
        self.turns = (0, 1, 2, 3) if augmentation == "dihedral" else (0, 2)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        rng = np.random.default_rng([self.seed, i])
        return self._draw(self.noisy, rng), self._draw(self.clean, rng)

    def _draw(self, images: list[np.ndarray], rng: np.random.Generator) -> Tensor:
        p = self.patch
        areas = np.array([(im.shape[0] - p + 1) * (im.shape[1] - p + 1) for im in images], dtype=float)
        image = images[rng.choice(len(images), p=areas / areas.sum())]
        r, c = rng.integers(image.shape[0] - p + 1), rng.integers(image.shape[1] - p + 1)
        patch = np.rot90(image[r : r + p, c : c + p], self.turns[rng.integers(len(self.turns))])
        if rng.integers(2):
            patch = patch[:, ::-1]
        return torch.from_numpy(np.ascontiguousarray(patch, dtype=np.float32))[None]
