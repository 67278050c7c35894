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
train as constants (computed without gradient).  The denoised image is
clip(γ·F(x) + (1-γ)·(x - H(x)), -1, 1) with γ = 0.5, in the clean set's [-1, 1] scale.

Deviations from the official code: no Lookahead on D and H (tfa wrappers), and no SWA on G (the
official demo never applies the SWA average either).
"""

from __future__ import annotations

import contextlib
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
from pairless.nets.iscl import MULTIPLE, PRESETS, Extractor, Generator, ISCLNets, NormPreset, init_weights_
from pairless.nets.norms import project_gates_

PROFILES = ("quick", "paper")


def profile_config(profile: str) -> ISCLConfig:
    """``paper``: the official demo (batch 64 of 64×64, 8k iterations, full-size networks).
    ``quick``: a few-minute CPU run with narrower networks, small batches and bf16."""
    if profile == "paper":
        return ISCLConfig()
    if profile == "quick":
        return ISCLConfig(
            generator_width=16,
            extractor_width=16,
            extractor_depth=10,
            discriminator_width=16,
            batch_size=4,
            steps=300,
            # 1e-4 leaves the discriminators inert for a few hundred steps; at 2e-3 the LN and GN presets
            # saturate F's tanh within 300 steps (EM charge, fold 0: 6.1 dB, all output at -1), while at
            # 1e-3 every preset trains stably (LN 20.60, BN 20.49, optimized 20.32 dB vs the input's 20.18)
            lr=1e-3,
            min_lr=1e-6,
            val_every=100,
            val_batches=4,
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


def discriminator_loss(nets: ISCLNets, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """D step: hinge on real vs generated, plus boosting (H-made pseudo samples are fakes too)."""
    with torch.no_grad():
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
    with torch.no_grad():
        n_hat = nets.H(x)
    y_hat, x_hat = nets.F(x), nets.G(y)
    y_bar, x_bar = x - n_hat, y + n_hat
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
    with torch.no_grad():
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


class ISCLModule(L.LightningModule):
    """The five networks and their three optimizers, trained by hand (``automatic_optimization = False``).

    Logged per step: the three losses and their terms, ``train_loss`` (as ``val_loss``, on the
    batch), ``h_norm`` = mean |H(x)| and ``f_residual`` = mean |F(x) - x| (both shrinking towards 0
    together is collapse).  ``val_loss`` is the self-consistency of held-out unpaired patches:
    cycle + bypass + pseudo-noise + noise consistency (unweighted L1 means).  It uses no clean/noisy
    pairs, so it measures agreement of F, G and H, not accuracy (an identity collapse would also
    score low); :func:`fit_iscl` therefore keeps the last weights, not the best-``val_loss`` ones.
    """

    def __init__(self, config: ISCLConfig, *, seed: int = 0):
        super().__init__()
        self.config = config
        self.automatic_optimization = False
        self.save_hyperparameters({"iscl": config.model_dump(mode="json"), "seed": seed})
        with torch.random.fork_rng(devices=[]):  # spectral norm draws its vectors from the global RNG
            torch.manual_seed(seed)
            self.nets = build_nets(config)
            init_weights_(self.nets)

    def configure_optimizers(self):
        cfg = self.config
        groups = (
            [*self.nets.D_X.parameters(), *self.nets.D_Y.parameters()],
            [*self.nets.F.parameters(), *self.nets.G.parameters()],
            list(self.nets.H.parameters()),
        )
        optimizers = [torch.optim.RAdam(p, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-7) for p in groups]
        # tfa RectifiedAdam(total_steps, min_lr): lr falls linearly from lr to min_lr over training
        end = cfg.min_lr / cfg.lr

        def decay(step: int) -> float:
            return 1 + (end - 1) * min(step, cfg.steps) / cfg.steps

        schedulers = [torch.optim.lr_scheduler.LambdaLR(o, decay) for o in optimizers]
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


class ISCLOutput(nn.Module):
    """clip(γ·F(x) + (1-γ)·(x - H(x)), -1, 1): the average of ISCL's two clean estimates."""

    def __init__(self, F: Generator, H: Extractor, mix: float = 0.5):
        super().__init__()
        self.F, self.H, self.mix = F, H, mix

    def forward(self, x: Tensor) -> Tensor:
        return (self.mix * self.F(x) + (1 - self.mix) * (x - self.H(x))).clamp(-1, 1)


class ISCLDenoiser(Denoiser):
    """A trained ISCL model: maps noisy intensities to the clean set's intensities, tile by tile."""

    spatial_ndim = 2

    def __init__(
        self,
        output: ISCLOutput,
        *,
        noisy_range: tuple[float, float],
        clean_range: tuple[float, float],
        tile: int = 256,
        overlap: int = 32,
        tta: bool = False,
    ):
        super().__init__()
        self.output = output.eval()
        self.noisy_range, self.clean_range = noisy_range, clean_range
        self.tile, self.overlap, self.tta = tile, overlap, tta

    def forward(self, y: Tensor, sigma: float | None = None) -> Tensor:
        from pairless.predict import predict_tiled

        x = to_unit_range(y, self.noisy_range)
        out = predict_tiled(
            self.output, x, tile=self.tile, overlap=self.overlap, tta=self.tta, multiple=MULTIPLE
        )
        return from_unit_range(out, self.clean_range).to(y.dtype)


def to_unit_range(image, value_range: tuple[float, float]):
    lo, hi = value_range
    return (image - (hi + lo) / 2) / ((hi - lo) / 2)


def from_unit_range(image, value_range: tuple[float, float]):
    lo, hi = value_range
    return image * ((hi - lo) / 2) + (hi + lo) / 2


def load_denoiser(
    config: dict, weights: dict[str, Tensor], *, tile: int = 256, overlap: int = 32, tta: bool = False
) -> ISCLDenoiser:
    """Rebuild the denoiser of a model folder (``config.yaml`` + ``weights.safetensors``)."""
    cfg = ISCLConfig.from_dict(config["iscl"])
    norms = norm_layers(cfg)
    output = ISCLOutput(
        Generator(norms.generator, cfg.generator_width),
        Extractor(norms.extractor, cfg.extractor_width, cfg.extractor_depth),
        cfg.output_mix,
    )
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
    )


class UnpairedPatches(torch.utils.data.Dataset):
    """Item i: a random patch of the noisy set and an independent one of the clean set, each in a
    random one of the 8 rotations/flips.  Draws depend only on ``(seed, i)``."""

    def __init__(
        self, noisy: list[np.ndarray], clean: list[np.ndarray], *, patch: int, length: int, seed: int
    ):
        self.noisy, self.clean, self.patch, self.length, self.seed = noisy, clean, patch, length, seed

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
        patch = np.rot90(image[r : r + p, c : c + p], rng.integers(4))
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


def _split(images: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Hold out the last image for validation when there are at least 4, else validate on a fresh draw."""
    return (images[:-1], images[-1:]) if len(images) >= 4 else (images, images)


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
    train_x, val_x = _split([to_unit_range(im, noisy_range) for im in noisy])
    train_y, val_y = _split([to_unit_range(im, clean_range) for im in clean])
    b, p = cfg.batch_size, cfg.patch_size
    train = UnpairedPatches(train_x, train_y, patch=p, length=cfg.steps * b, seed=seed)
    val = UnpairedPatches(val_x, val_y, patch=p, length=cfg.val_batches * b, seed=seed + 1)
    loader = torch.utils.data.DataLoader(train, batch_size=b, drop_last=True)
    val_loader = torch.utils.data.DataLoader(val, batch_size=b)
    module = ISCLModule(cfg, seed=seed)
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
