"""Test-time adaptation: the calibrated prior fine-tuned on the one image it is about to denoise.

:func:`adapt` trains a copy of a :class:`~pairless.methods.prior.calibrated.CalibratedPrior` on random
patches of the image itself with a self-supervised loss that needs nothing but the image and the calibrated
noise model ``Var_u = a·E[u] + b`` (prior units ``u = gain·x + offset``):

- ``"r2r"`` (default): Recorrupted-to-Recorrupted with the noise model's local σ, ``s = √(a·ū + b)``
  (GR2R's Gaussian split of Poisson-Gaussian noise, :mod:`pairless.methods.r2r`):
  ``L = ‖f(x + α·s·z; σ = √(1+α²)·s) − (x − s·z/α)‖²``, α = 0.5, the prior told its input's noise level;
- ``"ne2ne"``: Neighbor2Neighbor's sub-sampled pairs (:mod:`pairless.methods.ne2ne`), γ = 2 ramped over the
  run.

A fixed eighth of the image's patch cells (at least one) is held out; every ``val_every`` steps the same
loss on those cells, with fixed draws, is the validation loss (an unbiased estimate of the MSE against the
clean image plus a constant, for R2R), and the weights with the lowest one win, the unadapted prior
(step 0) included: adapting never returns a model that validates worse than the prior it started from.
Training stops at the time budget (wall clock, checked before every step), at ``steps``, or when
``patience`` validations in a row bring no improvement.  Draws come from ``seed``: with ``steps`` (and no
time budget) two runs on the same machine give the same weights.

The settings were measured on two images (``benchmarks/prior_finetune.py --tune``, one core, bf16, the
interim shipped prior; PSNR after 60 CPU-s):
camera 512² σ = 25 and a W2S channel-0 noisy frame (FOV 031, real noise).  See the module constants.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from pairless.errors import PairlessError
from pairless.methods.prior.calibrated import CalibratedPrior
from pairless.methods.prior.recipe import sigma_map

LOSSES = ("r2r", "ne2ne")
LOSS: Literal["r2r", "ne2ne"] = "r2r"
LR = 1e-4
PATCH = 64
BATCH = 8
ALPHA = 0.5  # R2R's α
GAMMA = 2.0  # Neighbor2Neighbor's final regulariser weight
VAL_EVERY = 10
VAL_FRACTION = 0.125
VAL_DRAWS = 2  # fixed recorruptions per validation patch (the R2R estimate's variance halves)
PATIENCE = 8  # validations without improvement before stopping early


def adapt(
    prior: CalibratedPrior,
    x: Tensor,
    *,
    seconds: float | None = None,
    seed: int = 0,
    steps: int | None = None,
    loss: Literal["r2r", "ne2ne"] = LOSS,
    lr: float = LR,
    patch: int = PATCH,
    batch: int = BATCH,
    val_every: int = VAL_EVERY,
    patience: int | None = PATIENCE,
    history: list | None = None,
    clock=time.monotonic,
) -> CalibratedPrior:
    """A copy of ``prior`` fine-tuned on ``x`` ``(1, 1, H, W)`` (image units, ``prior``'s calibration) for at
    most ``seconds`` of wall-clock time and/or ``steps`` steps (at least one of them); ``prior`` itself is
    never modified.  ``history``, when a list, receives ``(step, validation loss)`` pairs; ``clock`` measures
    the budget (``time.process_time`` for CPU seconds, as the benchmarks do).
    """
    if seconds is None and steps is None:
        raise PairlessError("adapt needs a budget: seconds (wall-clock) or steps")
    if seconds is not None and not 0 < seconds < math.inf:
        raise PairlessError(f"the adaptation budget must be a positive number of seconds, got {seconds}")
    if steps is not None and steps < 0:
        raise PairlessError(f"the number of adaptation steps must be >= 0, got {steps}")
    if loss not in LOSSES:
        raise PairlessError(f"unknown adaptation loss {loss!r}; use one of {', '.join(LOSSES)}")
    if x.ndim != 4 or x.shape[:2] != (1, 1):
        raise PairlessError(f"adapt takes one 2D image (1, 1, Y, X), got shape {tuple(x.shape)}")
    start = clock()
    # a denoiser runs under no_grad (or inference mode): the adaptation needs its gradients back
    with torch.inference_mode(False), torch.enable_grad():
        model = copy.deepcopy(prior).float().to(x.device)
        run = _Run(model, x.detach().float().clone(), loss=loss, patch=patch, seed=seed)
        budget = _Budget(seconds=seconds, steps=steps, clock=clock, start=start)
        return run.train(budget, lr=lr, batch=batch, val_every=val_every, patience=patience, history=history)


class _Budget:
    """Steps and/or seconds (by ``clock`` since ``start``); ``progress`` is the share of the budget used."""

    def __init__(self, *, seconds, steps, clock, start):
        self.seconds, self.steps, self.clock, self.start = seconds, steps, clock, start

    def progress(self, step: int) -> float:
        done = [step / self.steps] if self.steps is not None else []
        if self.seconds is not None:
            done.append((self.clock() - self.start) / self.seconds)
        return min(max(done), 1.0)

    def spent(self, step: int, *, reserve: float = 0.0) -> bool:
        """Whether the budget is used up, keeping ``reserve`` seconds (a last validation)."""
        if self.steps is not None and step >= self.steps:
            return True
        return self.seconds is not None and self.clock() - self.start + reserve >= self.seconds


class _Run:
    """One adaptation: the model, its image's patches, the loss and the validation (module notes)."""

    def __init__(self, model: CalibratedPrior, image: Tensor, *, loss: str, patch: int, seed: int):
        self.model, self.device, self.seed = model, image.device, seed
        self.patches = _Patches(image, patch=_patch_size(image, patch, model.multiple, loss), seed=seed)
        self.objective = (_R2RLoss if loss == "r2r" else _Ne2NeLoss)(model.calibration)
        kind = self.device.type
        self.bf16 = (kind == "cpu" and _cpu_bf16()) or (kind == "cuda" and torch.cuda.is_bf16_supported())
        model.to(memory_format=torch.channels_last if self.bf16 else torch.contiguous_format)

    def validate(self) -> float:
        """The loss on the held-out patches under fixed draws (the same at every validation)."""
        self.model.eval()
        generator = torch.Generator(device=self.device).manual_seed(self.seed + 7919)
        val = self.patches.val.to(self.device)
        with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            values = [
                float(self.objective(self.model, val, generator=generator, progress=1.0))
                for _ in range(VAL_DRAWS)
            ]
        self.model.train()
        return float(np.mean(values))

    def train(self, budget: _Budget, *, lr, batch, val_every, patience, history) -> CalibratedPrior:
        model = self.model
        tic = time.perf_counter()
        best_loss, best_state, best_step = self.validate(), copy.deepcopy(model.state_dict()), 0
        reserve = time.perf_counter() - tic  # what one validation costs, kept for the last one
        if history is not None:
            history.append((0, best_loss))
        optimiser = torch.optim.Adam(model.net.parameters(), lr=lr)
        rng = np.random.default_rng([self.seed, 11])
        generator = torch.Generator(device=self.device).manual_seed(self.seed)
        step, since_best = 0, 0
        model.train()
        while not budget.spent(step, reserve=reserve):
            progress = budget.progress(step)
            data = torch.from_numpy(self.patches.draw(batch, rng)).to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                value = self.objective(model, data, generator=generator, progress=progress)
            optimiser.zero_grad(set_to_none=True)
            value.backward()
            for group in optimiser.param_groups:  # cosine decay over the budget, to a tenth
                group["lr"] = lr * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))
            optimiser.step()
            step += 1
            if step % val_every and not budget.spent(step, reserve=reserve):
                continue
            current = self.validate()
            if history is not None:
                history.append((step, current))
            if current < best_loss:
                best_loss, best_step, since_best = current, step, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                since_best += 1
                if patience is not None and since_best >= patience:
                    break
        model.load_state_dict(best_state)
        model.to(memory_format=torch.contiguous_format)
        model.adapted_steps, model.best_step = step, best_step
        return model.eval()


def _cpu_bf16() -> bool:
    from pairless.inference.engines import cpu_has_bf16

    return cpu_has_bf16()


def _patch_size(image: Tensor, patch: int, multiple: int, loss: str) -> int:
    """The largest patch edge ≤ ``patch`` that fits the image twice and suits the network (and the loss)."""
    step = multiple * (2 if loss == "ne2ne" else 1)
    fit = min(image.shape[-2:]) // 2 // step * step
    edge = min(patch // step * step, fit)
    if edge < step:
        raise PairlessError(
            f"the image ({image.shape[-2]}×{image.shape[-1]}) is too small to adapt the prior on: it needs at"
            f" least {2 * step}×{2 * step} pixels"
        )
    return edge


class _Patches:
    """Random augmented training patches of one image and a fixed held-out set of patch cells."""

    def __init__(self, image: Tensor, *, patch: int, seed: int):
        from pairless.training.selfsup import PatchSampler

        stack = image[0].cpu().numpy()  # (1, H, W)
        self.sampler = PatchSampler([stack], (patch, patch), val_fraction=VAL_FRACTION, max_val=64, seed=seed)
        self.val = torch.from_numpy(self.sampler.validation_patches())  # (n, 1, p, p)

    def draw(self, count: int, rng: np.random.Generator) -> np.ndarray:
        return self.sampler.draw(count, rng, rotate=True)


class _R2RLoss:
    """R2R with the calibration's noise model, in prior units (the module notes)."""

    def __init__(self, calibration):
        self.c = calibration

    def __call__(self, model: CalibratedPrior, x: Tensor, *, generator, progress: float) -> Tensor:
        c = self.c
        u = x * c.gain + c.offset
        s = sigma_map(u, a=c.a, b=c.b) / c.gain  # the noise σ per pixel, in x's units
        z = torch.randn(x.shape, generator=generator, device=x.device)
        out = model(x + ALPHA * s * z, math.sqrt(1 + ALPHA**2) * s)
        return (((out.float() - (x - s * z / ALPHA)) * c.gain) ** 2).mean()


class _Ne2NeLoss:
    """Neighbor2Neighbor's loss (Huang et al. 2021, Eq. 6), in prior units."""

    def __init__(self, calibration):
        self.c = calibration

    def __call__(self, model: CalibratedPrior, x: Tensor, *, generator, progress: float) -> Tensor:
        from pairless.methods.ne2ne import neighbour_subsampler, subsample

        i1, i2 = neighbour_subsampler(tuple(x.shape), generator=generator, device=x.device)
        with torch.no_grad():
            full = model(x).float()
        g1, g2 = subsample(x, i1), subsample(x, i2)
        diff = (model(g1).float() - g2) * self.c.gain
        expected = (subsample(full, i1) - subsample(full, i2)) * self.c.gain
        return (diff**2).mean() + GAMMA * progress * ((diff - expected) ** 2).mean()
