"""ISCL's settings, its profiles, and the normalization each network gets."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from pairless.config import Config
from pairless.nets.iscl import PRESETS, NormPreset

ISCLNorm = Literal["optimized", "bin", "bn", "ln", "gn", "sn", "in"]
NormLayer = Literal[
    "batch",
    "layer",
    "instance",
    "group",
    "batch_instance",
    "batch_instance_iscl",
    "switchable",
    "spectral",
    "none",
]


class ISCLConfig(Config):
    """ISCL training; the defaults are the official demo (github.com/leekanggeun/ISCL, ``paper`` profile).

    ``norm`` is a preset of seed 002's Table 2; ``*_norm`` override one network's layer by name.

    Optimisation: ``optimizer`` for each of D, G and H with ``betas``; the learning rate warms up
    linearly from 0 over ``warmup_steps``, stays at ``lr`` until ``decay_start`` (a fraction of
    ``steps``), then falls linearly to ``min_lr`` at the last step (official: RAdam, no warm-up,
    decay from the first step).  D's rate is ``lr * d_lr_scale``.  ``lookahead_period`` > 0 wraps
    D's and H's optimizers in Lookahead(k, ``lookahead_alpha``) as the official code does (0: off).
    """

    # quick: a CPU run of minutes (width 16, H of depth 10, batch 8 of 64², 1200 steps, bf16).  Adam with
    # β1 0.5, a 100-step warm-up, 5e-4 to half the run and a linear decay after it: RAdam's built-in warm-up
    # times the decay left D at chance for all of a 300-step run; flips only, since charge-noise streaks run
    # along x and a turned patch would teach G and D vertical streaks (measured: benchmarks/iscl_quick.py)
    PROFILES: ClassVar[dict[str, dict]] = {
        "quick": {
            "generator_width": 16,
            "extractor_width": 16,
            "extractor_depth": 10,
            "discriminator_width": 16,
            "batch_size": 8,
            "steps": 1200,
            "optimizer": "adam",
            "betas": (0.5, 0.999),
            "lr": 5e-4,
            "min_lr": 1e-6,
            "warmup_steps": 100,
            "decay_start": 0.5,
            "augmentation": "flips",
            "val_every": 100,
            "val_batches": 2,
            "precision": "bf16-mixed",
        },
        "paper": {},  # the official demo: batch 64 of 64², 8k iterations, full widths, RAdam from 1e-4
    }

    norm: ISCLNorm = "optimized"
    generator_norm: NormLayer | None = None
    discriminator_norm: NormLayer | None = None
    extractor_norm: NormLayer | None = None
    generator_width: int = Field(32, ge=1)
    extractor_width: int = Field(32, ge=1)
    extractor_depth: int = Field(20, ge=2)
    discriminator_width: int = Field(32, ge=1)
    patch_size: int = Field(64, ge=64, multiple_of=16)
    batch_size: int = Field(64, ge=1)
    steps: int = Field(8000, ge=1)
    optimizer: Literal["radam", "adam"] = "radam"
    betas: tuple[float, float] = (0.9, 0.999)
    lr: float = Field(1e-4, gt=0)
    min_lr: float = Field(1e-7, ge=0)
    d_lr_scale: float = Field(1.0, gt=0)
    warmup_steps: int = Field(0, ge=0)
    decay_start: float = Field(0.0, ge=0, le=1)
    lookahead_period: int = Field(6, ge=0)
    lookahead_alpha: float = Field(0.5, gt=0, le=1)
    cycle_weight: float = Field(30.0, ge=0)  # λ
    output_mix: float = Field(0.5, ge=0, le=1)  # γ in γ·F(x) + (1-γ)·(x - H(x))
    # "dihedral": the 8 rotations/flips (official); "flips": only the 4 that keep the axes (identity,
    # x-flip, y-flip, 180°), for noise with a direction (scan streaks), which a 90° turn would change
    augmentation: Literal["dihedral", "flips"] = "dihedral"
    val_every: int = Field(400, ge=1)
    val_batches: int = Field(2, ge=1)
    precision: Literal["32-true", "bf16-mixed"] = "32-true"
    # "clean": both sets scaled by the clean set's [min, max] (the official code scales both 8-bit
    # sets alike; assumes shared units); "each": each set by its own [min, max] (different units)
    intensity_mapping: Literal["clean", "each"] = "clean"


def norm_layers(config: ISCLConfig) -> NormPreset:
    """The preset's normalization per network, with the config's per-network overrides applied."""
    preset = PRESETS[config.norm]
    return NormPreset(
        config.generator_norm or preset.generator,
        config.discriminator_norm or preset.discriminator,
        config.extractor_norm or preset.extractor,
    )
