"""ISCL: unpaired denoising by interdependent self-cooperative learning (Lee & Jeong, TMI 2021).

X is the noisy domain, Y the clean one; x and y are *unpaired* batches.  F: X→Y and G: Y→X are
generators, H extracts the noise map (n̂ = H(x), so x - n̂ is a second clean estimate), D_X and D_Y
are discriminators.  Losses and step order follow the official TF code (notes/iscl.md §1.2-1.3;
the TMI paper's Fig. 2 (b)-(d) draws the same graphs).  The TMI equation numbers could not be
checked, so the comments name each term instead:

    ŷ = F(x),  x̂ = G(y),  n̂ = H(x),  ȳ = x - n̂,  x̄ = y + n̂   (x's noise moved onto y)

    D step   relu(1-D_X(x)) + relu(D_X(x̂)) + relu(1-D_Y(y)) + relu(D_Y(ŷ))      adversarial hinge
             + relu(D_X(x̄)) + relu(D_Y(ȳ))                                       boosting
    G step   -D_Y(ŷ) - D_X(x̂)                                                    adversarial
             + λ(|x - G(ŷ)| + |y - F(x̂)|                                          cycle
                 + |ŷ - ȳ| + |y - F(x̄)|)                                          bypass, λ = 30
    H step   |H(x) - (x - ŷ)|                                                     pseudo-noise label
             + |H(x̂) - (x̂ - y)|                                                   noise consistency

All terms are means.  Per batch the order is D → G → H; each step sees the networks it does not
train as constants, run in eval mode as the official code calls them (``training=False``: batch
norms use and do not update their running statistics, spectral norm skips its power iteration).
D's and H's optimizers are wrapped in Lookahead(6, 0.5) as in the official code.  The denoised
image is clip(γ·F(x) + (1-γ)·(x - H(x)), -1, 1) with γ = 0.5, in the clean set's [-1, 1] scale,
computed on the whole image (the official test runs one whole image at a time).

Deviation from the official code: no SWA on G (the official demo never applies the SWA average, so
it trains and tests the raw weights, as here).  The ``quick`` profile departs from the official
optimiser on purpose (Adam with a warm-up instead of RAdam decaying from the first step); see
:func:`profile_config`.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from pairless.config import ISCLConfig
from pairless.denoiser import Denoiser
from pairless.errors import PairlessError
from pairless.nets.iscl import (
    LOCAL_NORMS,
    MULTIPLE,
    PRESETS,
    Extractor,
    Generator,
    ISCLNets,
    NormPreset,
    init_weights_,
)
from pairless.nets.norms import project_gates_
from pairless.optim import Lookahead
from pairless.predict import DEFAULT_TILE

PROFILES = ("quick", "paper")


def profile_config(profile: str) -> ISCLConfig:
    """``paper``: the official demo (batch 64 of 64×64, 8k iterations, full-size networks, RAdam
    decaying linearly from 1e-4, Lookahead on D and H, 8 rotations/flips).
    ``quick``: a CPU run of minutes: width 16, H of depth 10, batch 8 of 64×64, 1200 steps, bf16.

    The quick optimiser was chosen by measurement (EM charge noise, ``benchmarks/iscl_quick.py``;
    numbers in issue 10's report).  RAdam's built-in warm-up times the linear decay left the
    discriminators at chance (hinge ≈ 2) for all of a 300-step run; Adam with β1 = 0.5 (the usual
    GAN momentum), a 100-step warm-up, constant 5e-4 to half the run and a linear decay after it
    gets D's hinge from 2.0 to 1.39 by step 600 (it leaves chance at step ~250), and the output
    from the input's 19.77 dB to 21.75 (Gaussian filter 21.16; additive charge noise, fold 0 of 3).
    D at 4× G's rate did not learn sooner (hinge 1.99 at step 200 against 1.97), so D and G share
    the rate.  Twice the steps (1200, the decay from step 600) took the output to 22.11 dB (+0.36;
    Gaussian 21.16) in 16 min on one core, inside the issue's 20 min per row; the hinge was 1.33 at
    the end.  No better at 1200 steps: λ = 10 (D's hinge went back to chance and the monitor
    stopped the run at step 800 with 22.13), D of width 32 (hinge 1.23, 21.92, 20 min), and the
    mean of F's and H's weights from 25, 50, 60 or 75 % of the run on (22.02-22.10).  Lookahead
    stays on D and H as in the official code.  Flips only (no 90° turns): charge-noise streaks run
    along x, and a turned patch would teach G and D vertical streaks that never occur."""
    if profile == "paper":
        return ISCLConfig()
    if profile == "quick":
        return ISCLConfig(
            generator_width=16,
            extractor_width=16,
            extractor_depth=10,
            discriminator_width=16,
            batch_size=8,
            steps=1200,
            optimizer="adam",
            betas=(0.5, 0.999),
            lr=5e-4,
            min_lr=1e-6,
            warmup_steps=100,
            decay_start=0.5,
            augmentation="flips",
            val_every=100,
            val_batches=2,
            precision="bf16-mixed",
        )
    raise PairlessError(f"unknown profile {profile!r}; use one of {', '.join(PROFILES)}")


def norm_layers(config: ISCLConfig) -> NormPreset:
    """The preset's normalization per network, with the config's per-network overrides applied."""
    preset = PRESETS[config.norm]
    return NormPreset(
        config.generator_norm or preset.generator,
        config.discriminator_norm or preset.discriminator,
        config.extractor_norm or preset.extractor,
    )


def build_nets(config: ISCLConfig) -> ISCLNets:
    return ISCLNets(
        norm_layers(config),
        generator_width=config.generator_width,
        extractor_width=config.extractor_width,
        extractor_depth=config.extractor_depth,
        discriminator_width=config.discriminator_width,
    )


def _l1(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).abs().mean()


@contextlib.contextmanager
def _eval_mode(*modules: nn.Module):
    """Run ``modules`` in eval mode (the official ``training=False``), restoring their modes after.

    The networks a step does not train are evaluated, not trained: a batch norm in F must neither
    normalise generated batches by their own statistics nor fold them into its running averages.
    """
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


def discriminator_loss(nets: ISCLNets, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """D step: hinge on real vs generated, plus boosting (H-made pseudo samples are fakes too)."""
    with torch.no_grad(), _eval_mode(nets.F, nets.G, nets.H):
        y_hat, x_hat, n_hat = nets.F(x), nets.G(y), nets.H(x)
    y_bar, x_bar = x - n_hat, y + n_hat
    adversarial = (
        nnf.relu(1 - nets.D_X(x)).mean()
        + nnf.relu(nets.D_X(x_hat)).mean()
        + nnf.relu(1 - nets.D_Y(y)).mean()
        + nnf.relu(nets.D_Y(y_hat)).mean()
    )
    boosting = nnf.relu(nets.D_X(x_bar)).mean() + nnf.relu(nets.D_Y(y_bar)).mean()
    return {"loss_d": adversarial + boosting, "adversarial_d": adversarial, "boosting": boosting}


def generator_loss(nets: ISCLNets, x: Tensor, y: Tensor, *, lam: float) -> dict[str, Tensor]:
    """G step (F and G together): adversarial + λ·(cycle + bypass), the "nested" loss."""
    with torch.no_grad(), _eval_mode(nets.H):
        n_hat = nets.H(x)
    y_hat, x_hat = nets.F(x), nets.G(y)
    y_bar, x_bar = x - n_hat, y + n_hat
    with _eval_mode(nets.D_X, nets.D_Y):  # official: DX/DY(training=False) in the G step
        adversarial = -nets.D_Y(y_hat).mean() - nets.D_X(x_hat).mean()
    cycle = _l1(x, nets.G(y_hat)) + _l1(y, nets.F(x_hat))
    bypass = _l1(y_hat, y_bar) + _l1(y, nets.F(x_bar))
    return {
        "loss_g": adversarial + lam * (cycle + bypass),
        "adversarial_g": adversarial,
        "cycle": cycle,
        "bypass": bypass,
        # collapse monitors: H → 0 and F → identity together mean nothing is removed
        "h_norm": n_hat.abs().mean().detach(),
        "f_residual": (y_hat - x).abs().mean().detach(),
    }


def extractor_loss(nets: ISCLNets, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """H step: F's residual labels H's noise on x; on G's fakes the added noise is known exactly."""
    with torch.no_grad(), _eval_mode(nets.F, nets.G):
        y_hat, x_hat = nets.F(x), nets.G(y)
    pseudo = _l1(nets.H(x), x - y_hat)
    consistency = _l1(nets.H(x_hat), x_hat - y)
    return {"loss_h": pseudo + consistency, "pseudo_noise": pseudo, "noise_consistency": consistency}


@contextlib.contextmanager
def _frozen(*modules: nn.Module):
    """Skip parameter gradients of networks a step does not train (they still pass gradients on)."""
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


# the hinge of one discriminator is relu(1 - D(real)) + relu(D(fake)) = 1 when D scores everything 0
# (chance); two of them sum to 2.  Above this mean over a check interval, D has learned nothing.
D_INERT = 1.9
# one grey level of an 8-bit image in the [-1, 1] scale: if F changes the image by less than this
# and H extracts less, the output is the input (identity collapse, notes/iscl.md §6)
IDENTITY = 2 / 255


def diagnose(step: int, *, adversarial_d: float, f_residual: float, h_norm: float) -> dict[str, str]:
    """The training problems the means of one check interval show: ``{"inert": msg, "identity": msg}``."""
    problems = {}
    if adversarial_d >= D_INERT:
        problems["inert"] = (
            f"ISCL's discriminators are not learning: their hinge loss is {adversarial_d:.2f} after {step} "
            f"steps (2 is chance), so the adversarial terms are inert and F only fits the cycle and bypass "
            f"terms, which the identity satisfies; train longer or try another lr or d_lr_scale (a higher lr can delay D: EM film noise, quick profile, lr 1e-3 was still at chance at step 300, 5e-4 was not)"
        )
    if f_residual < IDENTITY and h_norm < IDENTITY:
        problems["identity"] = (
            f"ISCL's generators have collapsed to the identity after {step} steps: F changes the image by "
            f"{f_residual:.4f} and H extracts {h_norm:.4f} on average (less than one 8-bit grey level), so "
            f"the output is the noisy input; check that the noisy and clean sets differ, or lower lr"
        )
    return problems


class ISCLModule(L.LightningModule):
    """The five networks and their three optimizers, trained by hand (``automatic_optimization = False``).

    Logged per step: the three losses and their terms, ``train_loss`` (as ``val_loss``, on the
    batch), ``h_norm`` = mean |H(x)| and ``f_residual`` = mean |F(x) - x| (both shrinking towards 0
    together is collapse).  ``val_loss`` is the self-consistency of held-out unpaired patches:
    cycle + bypass + pseudo-noise + noise consistency (unweighted L1 means).  It uses no clean/noisy
    pairs, so it measures agreement of F, G and H, not accuracy (an identity collapse would also
    score low); :func:`fit_iscl` therefore keeps the last weights, not the best-``val_loss`` ones.

    Every ``val_every`` steps the interval's mean D hinge loss, ``f_residual`` and ``h_norm`` are
    checked (:func:`diagnose`): from half the run, a D still at chance stops training with a
    warning; from a quarter of the run, generators at the identity give a warning, and stop
    training at the second check in a row (more steps would change neither).

    ``monitor_pairs`` (noisy, clean) image tensors, optional, are scored at each validation for the
    training log only (``val_psnr_f`` for F(x), ``val_psnr_h`` for x - H(x), ``val_psnr_mix`` for
    the output, ``val_psnr_input``); nothing is trained or chosen by them.
    """

    def __init__(self, config: ISCLConfig, *, seed: int = 0, monitor_pairs: Sequence[tuple[Tensor, Tensor]] = ()):
        super().__init__()
        self.config = config
        self.automatic_optimization = False
        self.save_hyperparameters({"iscl": config.model_dump(mode="json"), "seed": seed})
        with torch.random.fork_rng(devices=[]):  # spectral norm draws its vectors from the global RNG
            torch.manual_seed(seed)
            self.nets = build_nets(config)
            init_weights_(self.nets)
        self.monitor_pairs = list(monitor_pairs)
        self._interval: dict[str, list[float]] = {}
        self._warned: set[str] = set()
        self._identity_checks = 0

    def configure_optimizers(self):
        cfg = self.config
        groups = (
            [*self.nets.D_X.parameters(), *self.nets.D_Y.parameters()],
            [*self.nets.F.parameters(), *self.nets.G.parameters()],
            list(self.nets.H.parameters()),
        )
        kind = torch.optim.RAdam if cfg.optimizer == "radam" else torch.optim.Adam
        lrs = (cfg.lr * cfg.d_lr_scale, cfg.lr, cfg.lr)
        # ε = 1e-7 is tfa's (and Keras') default, which the official optimizers use
        optimizers = [kind(p, lr=lr, betas=cfg.betas, eps=1e-7) for p, lr in zip(groups, lrs)]
        if cfg.lookahead_period:  # official: Lookahead(sync_period=6, slow_step_size=0.5) on D and H only
            for i in (0, 2):
                optimizers[i] = Lookahead(optimizers[i], sync_period=cfg.lookahead_period,
                                          slow_step_size=cfg.lookahead_alpha)
        schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lr_factor(cfg)) for o in optimizers]
        return optimizers, schedulers

    def iterate(
        self,
        x: Tensor,
        y: Tensor,
        optimizers: Sequence,
        backward: Callable[[Tensor], None] = Tensor.backward,
    ) -> dict[str, Tensor]:
        """One ISCL iteration on a noisy batch ``x`` and a clean batch ``y``: D, then G, then H."""
        nets, (opt_d, opt_g, opt_h) = self.nets, optimizers
        logs = {}
        with _frozen(nets.F, nets.G, nets.H):
            terms = discriminator_loss(nets, x, y)
            opt_d.zero_grad()
            backward(terms["loss_d"])
            opt_d.step()
        logs |= terms
        with _frozen(nets.H, nets.D_X, nets.D_Y):
            terms = generator_loss(nets, x, y, lam=self.config.cycle_weight)
            opt_g.zero_grad()
            backward(terms["loss_g"])
            opt_g.step()
        logs |= terms
        with _frozen(nets.F, nets.G, nets.D_X, nets.D_Y):
            terms = extractor_loss(nets, x, y)
            opt_h.zero_grad()
            backward(terms["loss_h"])
            opt_h.step()
        logs |= terms
        project_gates_(nets)
        return {k: v.detach() for k, v in logs.items()}

    def training_step(self, batch, batch_idx):
        opt_d, opt_g, opt_h = self.optimizers()
        # Lightning counts every LightningOptimizer.step() as a global step; stepping D and G through
        # the raw optimizers keeps global_step (and max_steps) equal to the number of iterations
        logs = self.iterate(*batch, (opt_d.optimizer, opt_g.optimizer, opt_h), backward=self.manual_backward)
        for scheduler in self.lr_schedulers():
            scheduler.step()
        self.log_dict(logs, on_step=True, on_epoch=False)
        # the same self-consistency as val_loss, so the two curves are comparable
        self.log("train_loss", logs["cycle"] + logs["bypass"] + logs["loss_h"], prog_bar=True)
        self.watch(self.global_step, logs)

    def watch(self, step: int, logs: dict[str, Tensor]) -> None:
        """Collect the monitors; at each check interval's end, warn about (and maybe stop on) a problem."""
        for key in ("adversarial_d", "f_residual", "h_norm"):
            self._interval.setdefault(key, []).append(float(logs[key]))
        cfg = self.config
        if step % cfg.val_every and step != cfg.steps:
            return
        means = {k: float(np.mean(v)) for k, v in self._interval.items()}
        self._interval = {}
        if step < cfg.steps / 4:
            return  # the first quarter is for getting going: D starts at chance and F at noise
        problems = diagnose(step, **means)
        if step < cfg.steps / 2:
            # D may start late (EM charge, quick profile: hinge 1.97 at step 200 of 600, 1.51 at 400)
            problems.pop("inert", None)
        self._identity_checks = self._identity_checks + 1 if "identity" in problems else 0
        stop = "inert" in problems or self._identity_checks >= 2
        for kind, message in problems.items():
            if kind not in self._warned or stop:
                self._warned.add(kind)
                suffix = f"; training stopped at step {step} of {cfg.steps}" if stop and step < cfg.steps else ""
                warnings.warn(message + suffix, stacklevel=2)
        if stop and self._trainer is not None:
            self.trainer.should_stop = True

    def validation_step(self, batch, batch_idx):
        x, y = batch
        g = generator_loss(self.nets, x, y, lam=1.0)
        h = extractor_loss(self.nets, x, y)
        val = g["cycle"] + g["bypass"] + h["loss_h"]
        self.log("val_loss", val, on_epoch=True, prog_bar=True, batch_size=x.shape[0])
        self.log_dict(
            {"val_h_norm": g["h_norm"], "val_f_residual": g["f_residual"]},
            on_epoch=True,
            batch_size=x.shape[0],
        )

    def on_validation_epoch_end(self) -> None:
        if not self.monitor_pairs:
            return
        output = ISCLOutput(self.nets.F, self.nets.H, self.config.output_mix)
        scores: dict[str, list[float]] = {}
        with torch.no_grad():
            for noisy, clean in self.monitor_pairs:
                noisy, clean = noisy.to(self.device), clean.to(self.device)
                for name, image in {"input": noisy, **output.estimates(noisy)}.items():
                    scores.setdefault(f"val_psnr_{name}", []).append(_psnr(image.float(), clean))
        self.log_dict({k: float(np.mean(v)) for k, v in scores.items()})


def lr_factor(cfg: ISCLConfig) -> Callable[[int], float]:
    """The learning-rate multiplier at step t: linear warm-up, constant, then linear decay to min_lr."""
    end = cfg.min_lr / cfg.lr
    start = cfg.decay_start * cfg.steps

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        if step <= start:
            return warm
        return warm * (1 + (end - 1) * min(step - start, cfg.steps - start) / max(cfg.steps - start, 1))

    return factor


def _psnr(image: Tensor, truth: Tensor) -> float:
    """PSNR in the [-1, 1] scale (data range 2)."""
    mse = float(((image.clamp(-1, 1) - truth) ** 2).mean())
    return 10 * math.log10(4 / max(mse, 1e-12))


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
        with _eval_mode(self.F, self.H):
            f, h = self.F(x), x - self.H(x)
        return {"f": f.clamp(-1, 1), "h": h.clamp(-1, 1), "mix": (self.mix * f + (1 - self.mix) * h).clamp(-1, 1)}


# the largest image run whole (2048²: ~0.3 GB per bf16 activation of a 32-channel layer); larger ones are tiled
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
        from pairless.predict import predict_tiled

        x = to_unit_range(y, self.noisy_range)
        h, w = x.shape[-2:]
        if self.whole_image and h * w > self.max_pixels:
            warnings.warn(
                f"the {h}×{w} image is larger than ISCL's whole-image limit ({self.max_pixels} pixels), so it "
                f"is denoised in {self.tile}-px tiles, each normalised by its own statistics (the official "
                f"code runs whole images), so the result differs from a whole-image run",
                stacklevel=2,
            )
        if not self.whole_image or h * w > self.max_pixels:
            out = predict_tiled(
                self.output, x, tile=self.tile, overlap=self.overlap, tta=self.tta, multiple=MULTIPLE
            )
        else:
            # one tile that covers the image, one image per forward pass
            edge = max(math.ceil(h / MULTIPLE), math.ceil(w / MULTIPLE)) * MULTIPLE
            out = torch.cat([
                predict_tiled(self.output, x[i : i + 1], tile=edge, overlap=0, tta=self.tta, multiple=MULTIPLE)
                for i in range(x.shape[0])
            ])
        return from_unit_range(out, self.clean_range).to(y.dtype)


def to_unit_range(image, value_range: tuple[float, float]):
    lo, hi = value_range
    return (image - (hi + lo) / 2) / ((hi - lo) / 2)


def from_unit_range(image, value_range: tuple[float, float]):
    lo, hi = value_range
    return image * ((hi - lo) / 2) + (hi + lo) / 2


def load_denoiser(
    config: dict, weights: dict[str, Tensor], *, tile: int = DEFAULT_TILE, overlap: int = 32, tta: bool = False
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
            f"the model folder is damaged or mixed up: train it again with `pairless fit iscl`"
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


def read_slices(folder: Path, name: str) -> list[np.ndarray]:
    """Every image of ``folder`` as 2D slices (axes before Y and X are split off), sorted by file name."""
    from pairless.io import read_image

    folder = Path(folder)
    if not folder.is_dir():
        raise PairlessError(f"--{name} {str(folder)!r} is not a folder; pass a folder of {name} images")
    files = [f for f in sorted(folder.iterdir()) if not f.name.startswith(".")]
    if not files:
        raise PairlessError(f"--{name} folder {str(folder)!r} holds no images; put TIFF or PNG files in it")
    slices = []
    for f in files:
        data = read_image(f).data
        slices += list(data.reshape(-1, *data.shape[-2:]))
    return slices


def _check_images(images: list[np.ndarray], name: str, patch: int) -> list[np.ndarray]:
    if len(images) == 0:
        raise PairlessError(f"the {name} set is empty; pass at least one {name} image")
    checked = []
    for i, image in enumerate(images):
        image = np.asarray(image)
        if image.ndim != 2:
            raise PairlessError(
                f"{name} image {i} has shape {image.shape}, but ISCL trains on 2D (YX) images; "
                f"split stacks into 2D slices first"
            )
        if min(image.shape) < patch:
            raise PairlessError(
                f"{name} image {i} ({image.shape[0]}×{image.shape[1]}) is smaller than the {patch}×{patch} "
                f"training patch; use larger images"
            )
        if not np.issubdtype(image.dtype, np.number) or np.issubdtype(image.dtype, np.complexfloating):
            raise PairlessError(f"{name} image {i} has dtype {image.dtype}; pass real-valued images")
        image = image.astype(np.float32)
        if not np.isfinite(image).all():
            raise PairlessError(f"{name} image {i} contains NaN or Inf; replace them before training")
        checked.append(image)
    return checked


def _value_range(images: list[np.ndarray]) -> tuple[float, float]:
    lo, hi = min(float(im.min()) for im in images), max(float(im.max()) for im in images)
    return (lo, hi) if hi > lo else (lo - 1.0, lo + 1.0)


def fit_iscl(
    noisy: list[np.ndarray],
    clean: list[np.ndarray],
    *,
    out: Path,
    norm: str = "optimized",
    profile: str = "quick",
    config: ISCLConfig | None = None,
    seed: int = 0,
    progress: bool = True,
    monitor_pairs: tuple[list[np.ndarray], list[np.ndarray]] | None = None,
) -> ISCLDenoiser:
    """Train ISCL on unpaired noisy and clean 2D images; write the model folder ``out``; return it loaded.

    Parameters
    ----------
    noisy, clean
        2D (YX) images of the two domains; they need not show the same things.  The clean set's
        [min, max] is mapped linearly to [-1, 1]; the noisy set goes through the same map (config
        ``intensity_mapping="clean"``, for sets in the same units) or through its own [min, max]
        (``"each"``).  Both maps are stored; the denoiser returns the clean set's units.
    out
        Model folder (``config.yaml`` + ``weights.safetensors``); training logs go to ``out/training``.
    norm
        Normalization preset (``optimized``, ``bin``, ``bn``, ``ln``, ``gn``, ``sn``, ``in``).
    profile
        ``quick`` (CPU minutes) or ``paper`` (official settings); ignored when ``config`` is given,
        except that ``norm`` always sets the preset.
    seed
        Seeds initialisation and patch sampling.
    monitor_pairs
        Optional (noisy images, their clean images), in the units of ``noisy`` and ``clean``: their
        PSNR for F(x), x - H(x) and the output is written to the training log at each validation
        (diagnostics only; training and the kept weights do not depend on them).

    Every image of both sets is used for training; the validation patches (``val_loss``, a
    self-consistency that picks nothing) are other draws from the same images.
    """
    from pairless.modelio import load_denoiser as load_model_folder
    from pairless.modelio import save_model_folder
    from pairless.train import fit_module

    base = config if config is not None else profile_config(profile)
    cfg = ISCLConfig.from_dict({**base.model_dump(), "norm": norm})
    noisy = _check_images(noisy, "noisy", cfg.patch_size)
    clean = _check_images(clean, "clean", cfg.patch_size)
    clean_range = _value_range(clean)
    noisy_range = clean_range if cfg.intensity_mapping == "clean" else _value_range(noisy)
    train_x = [to_unit_range(im, noisy_range) for im in noisy]
    train_y = [to_unit_range(im, clean_range) for im in clean]
    b, p = cfg.batch_size, cfg.patch_size
    train = UnpairedPatches(train_x, train_y, patch=p, length=cfg.steps * b, seed=seed, augmentation=cfg.augmentation)
    val = UnpairedPatches(train_x, train_y, patch=p, length=cfg.val_batches * b, seed=seed + 1,
                          augmentation=cfg.augmentation)
    loader = torch.utils.data.DataLoader(train, batch_size=b, drop_last=True)
    val_loader = torch.utils.data.DataLoader(val, batch_size=b)
    pairs = []
    if monitor_pairs is not None:
        for x, y in zip(*monitor_pairs):
            x, y = (torch.from_numpy(np.asarray(a, dtype=np.float32))[None, None] for a in (x, y))
            pairs.append((to_unit_range(x, noisy_range), to_unit_range(y, clean_range)))
    module = ISCLModule(cfg, seed=seed, monitor_pairs=pairs)
    out = Path(out)
    fit_module(
        module,
        loader,
        val_loader,
        out_dir=out / "training",
        max_steps=cfg.steps,
        val_every_n_steps=min(cfg.val_every, cfg.steps),
        seed=seed,
        precision=cfg.precision,
        progress=progress,
    )
    # the last weights, as the official code uses: val_loss rewards self-consistency, which an
    # identity collapse also has, so it must not pick the model
    output = ISCLOutput(module.nets.F, module.nets.H, cfg.output_mix)
    save_model_folder(
        out,
        config={
            "method": "iscl",
            "iscl": cfg.model_dump(mode="json"),
            "noisy_range": list(noisy_range),
            "clean_range": list(clean_range),
            "seed": seed,
        },
        weights=output.state_dict(),
    )
    return load_model_folder(out)
