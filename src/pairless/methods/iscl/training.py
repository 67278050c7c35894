"""ISCL's training: the five networks and their three optimizers, the step D then G then H, the monitors, and
the fit."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import Tensor

from pairless.errors import PairlessError
from pairless.methods.iscl.config import ISCLConfig, norm_layers
from pairless.methods.iscl.denoiser import ISCLOutput, to_unit_range
from pairless.methods.iscl.losses import discriminator_loss, extractor_loss, frozen, generator_loss
from pairless.nets.iscl import (
    ISCLNets,
    init_weights_,
)
from pairless.nets.norms import project_gates_
from pairless.training.engine import check_step_memory, train_on_patches
from pairless.training.modelio import run_record
from pairless.training.optim import Lookahead
from pairless.training.patches import UnpairedPatches, value_range


def build_nets(config: ISCLConfig) -> ISCLNets:
    return ISCLNets(
        norm_layers(config),
        generator_width=config.generator_width,
        extractor_width=config.extractor_width,
        extractor_depth=config.extractor_depth,
        discriminator_width=config.discriminator_width,
    )


# the hinge of one discriminator is relu(1 - D(real)) + relu(D(fake)) = 1 when D scores everything 0
# (chance); two of them sum to 2.  Above this mean over a check interval, D has learned nothing.
D_INERT = 1.9


# one grey level of an 8-bit image in the [-1, 1] scale: if F changes the image by less than this
# and H extracts less, the output is the input (identity collapse)
IDENTITY = 2 / 255


def diagnose(step: int, *, adversarial_d: float, f_residual: float, h_norm: float) -> dict[str, str]:
    """The training problems the means of one check interval show: ``{"inert": msg, "identity": msg}``."""
    problems = {}
    if adversarial_d >= D_INERT:
        problems["inert"] = (
            f"ISCL's discriminators are not learning: their hinge loss is {adversarial_d:.2f} after {step}"
            " steps (2 is chance), so the adversarial terms are inert and F only fits the cycle and bypass"
            " terms, which the identity satisfies; train longer or try another lr or d_lr_scale (a higher lr"
            " can delay D: EM film noise, quick profile, lr 1e-3 was still at chance at step 300, 5e-4 was"
            " not)"
        )
    if f_residual < IDENTITY and h_norm < IDENTITY:
        problems["identity"] = (
            f"ISCL's generators have collapsed to the identity after {step} steps: F changes the image by "
            f"{f_residual:.4f} and H extracts {h_norm:.4f} on average (less than one 8-bit grey level), so "
            "the output is the noisy input; check that the noisy and clean sets differ, or lower lr"
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

    def __init__(
        self, config: ISCLConfig, *, seed: int = 0, monitor_pairs: Sequence[tuple[Tensor, Tensor]] = ()
    ):
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
                optimizers[i] = Lookahead(
                    optimizers[i], sync_period=cfg.lookahead_period, slow_step_size=cfg.lookahead_alpha
                )
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
        with frozen(nets.F, nets.G, nets.H):
            terms = discriminator_loss(nets, x, y)
            opt_d.zero_grad()
            backward(terms["loss_d"])
            opt_d.step()
        logs |= terms
        with frozen(nets.H, nets.D_X, nets.D_Y):
            terms = generator_loss(nets, x, y, lam=self.config.cycle_weight)
            opt_g.zero_grad()
            backward(terms["loss_g"])
            opt_g.step()
        logs |= terms
        with frozen(nets.F, nets.G, nets.D_X, nets.D_Y):
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
                suffix = (
                    f"; training stopped at step {step} of {cfg.steps}" if stop and step < cfg.steps else ""
                )
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


def _check_images(images: list[np.ndarray], name: str, patch: int) -> list[np.ndarray]:
    if len(images) == 0:
        raise PairlessError(f"the {name} set is empty; pass at least one {name} image")
    checked = []
    for i, image in enumerate(images):
        image = np.asarray(image)
        if image.ndim != 2:
            raise PairlessError(
                f"{name} image {i} has shape {image.shape}, but ISCL trains on 2D (YX) images; "
                "split stacks into 2D slices first"
            )
        if min(image.shape) < patch:
            raise PairlessError(
                f"{name} image {i} ({image.shape[0]}×{image.shape[1]}) is smaller than the {patch}×{patch} "
                "training patch; use larger images"
            )
        if not np.issubdtype(image.dtype, np.number) or np.issubdtype(image.dtype, np.complexfloating):
            raise PairlessError(f"{name} image {i} has dtype {image.dtype}; pass real-valued images")
        image = image.astype(np.float32)
        if not np.isfinite(image).all():
            raise PairlessError(f"{name} image {i} contains NaN or Inf; replace them before training")
        checked.append(image)
    return checked


def train(
    noisy: list[np.ndarray],
    clean: list[np.ndarray],
    *,
    config: ISCLConfig,
    out: Path,
    seed: int = 0,
    progress: bool = True,
    resume: bool | None = None,
    overwrite: bool = False,
    monitor_pairs: tuple[list[np.ndarray], list[np.ndarray]] | None = None,
) -> tuple[dict, dict[str, Tensor]]:
    """Train ISCL on unpaired noisy and clean 2D images; write the model folder ``out``; return its contents.

    Parameters
    ----------
    noisy, clean
        2D (YX) images of the two domains; they need not show the same things.  The clean set's
        [min, max] is mapped linearly to [-1, 1]; the noisy set goes through the same map (config
        ``intensity_mapping="clean"``, for sets in the same units) or through its own [min, max]
        (``"each"``).  Both maps are stored; the denoiser returns the clean set's units.
    out
        Model folder (``config.yaml`` + ``weights.safetensors``); training logs go to ``out/training``.
    config
        The settings; ``norm`` is the normalization preset (``optimized``, ``bin``, ``bn``, ``ln``, ``gn``,
        ``sn``, ``in``).
    seed
        Seeds initialisation and patch sampling.
    monitor_pairs
        Optional (noisy images, their clean images), in the units of ``noisy`` and ``clean``: their
        PSNR for F(x), x - H(x) and the output is written to the training log at each validation
        (diagnostics only; training and the kept weights do not depend on them).

    Every image of both sets is used for training; the validation patches (``val_loss``, a
    self-consistency that picks nothing) are other draws from the same images.
    """
    cfg = config
    # five networks, F and G at full width through a step: about four times one network's feature maps
    check_step_memory(batch=cfg.batch_size, pixels=cfg.patch_size**2, width=4 * cfg.generator_width)
    noisy = _check_images(noisy, "noisy", cfg.patch_size)
    clean = _check_images(clean, "clean", cfg.patch_size)
    clean_range = value_range(clean)
    noisy_range = clean_range if cfg.intensity_mapping == "clean" else value_range(noisy)
    train_x = [to_unit_range(im, noisy_range) for im in noisy]
    train_y = [to_unit_range(im, clean_range) for im in clean]
    b, p = cfg.batch_size, cfg.patch_size
    train = UnpairedPatches(
        train_x, train_y, patch=p, length=cfg.steps * b, seed=seed, augmentation=cfg.augmentation
    )
    val = UnpairedPatches(
        train_x, train_y, patch=p, length=cfg.val_batches * b, seed=seed + 1, augmentation=cfg.augmentation
    )
    pairs = []
    if monitor_pairs is not None:
        for x, y in zip(*monitor_pairs):
            x, y = (torch.from_numpy(np.asarray(a, dtype=np.float32))[None, None] for a in (x, y))
            pairs.append((to_unit_range(x, noisy_range), to_unit_range(y, clean_range)))
    module = ISCLModule(cfg, seed=seed, monitor_pairs=pairs)

    def export(_best: Path) -> tuple[dict, dict[str, Tensor]]:
        # the last weights, as the official code uses: val_loss rewards self-consistency, which an
        # identity collapse also has, so it must not pick the model
        output = ISCLOutput(module.nets.F, module.nets.H, cfg.output_mix)
        return {
            "method": "iscl",
            "iscl": cfg.model_dump(mode="json"),
            "noisy_range": list(noisy_range),
            "clean_range": list(clean_range),
            "seed": seed,
        }, output.state_dict()

    return train_on_patches(
        module,
        train,
        val,
        config=cfg,
        folder=out,
        export=export,
        record=run_record("iscl", cfg.model_dump(mode="json"), seed=seed, data=[*noisy, *clean]),
        seed=seed,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
    )
