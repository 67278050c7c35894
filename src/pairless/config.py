"""Configuration: pydantic models with defaults that work, stored as YAML read with a safe loader.

Each method's configuration subclasses :class:`Config`; a model folder keeps the one it was
trained with (``config.yaml``) so it can be rebuilt on any machine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pairless.errors import PairlessError
from pairless.files import atomic_path

C = TypeVar("C", bound="Config")


class Config(BaseModel):
    """Base of every configuration: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @classmethod
    def from_dict(cls: type[C], data: dict) -> C:
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top level)"
            raise PairlessError(
                f"invalid {cls.__name__} setting {where!r}: {first['msg']}; "
                f"fix that key in the configuration (see `pairless fit --help` for the defaults)"
            ) from None

    @classmethod
    def from_yaml(cls: type[C], path: str | os.PathLike) -> C:
        return cls.from_dict(read_yaml(path))

    def to_yaml(self, path: str | os.PathLike) -> None:
        write_yaml(path, self.model_dump(mode="json"))


def read_yaml(path: str | os.PathLike) -> dict:
    """Read a YAML mapping with the safe loader: a YAML file can never run code."""
    path = Path(path)
    if not path.is_file():
        raise PairlessError(f"configuration file {str(path)!r} does not exist; check the path")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise PairlessError(
            f"{str(path)!r} is not valid YAML ({str(err).splitlines()[0]}); fix the file"
        ) from None
    if not isinstance(data, dict):
        raise PairlessError(f"{str(path)!r} must hold a YAML mapping of settings, not {type(data).__name__}")
    return data


def write_yaml(path: str | os.PathLike, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(data, sort_keys=False))


ISCLNorm = Literal["optimized", "bin", "bn", "ln", "gn", "sn", "in"]
NormLayer = Literal[
    "batch", "layer", "instance", "group", "batch_instance", "batch_instance_iscl", "switchable", "spectral", "none"
]


class ISCLConfig(Config):
    """ISCL training (notes/iscl.md §1); the defaults are the official demo (``paper`` profile).

    ``norm`` is a preset of seed 002's Table 2; ``*_norm`` override one network's layer by name.

    Optimisation: ``optimizer`` for each of D, G and H with ``betas``; the learning rate warms up
    linearly from 0 over ``warmup_steps``, stays at ``lr`` until ``decay_start`` (a fraction of
    ``steps``), then falls linearly to ``min_lr`` at the last step (official: RAdam, no warm-up,
    decay from the first step).  D's rate is ``lr * d_lr_scale``.  ``lookahead_period`` > 0 wraps
    D's and H's optimizers in Lookahead(k, ``lookahead_alpha``) as the official code does (0: off).
    """

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


class SelfSupervisedConfig(Config):
    """What every self-supervised method shares: the network, the patches, the schedule, the precision.

    Each method subclasses it with the settings that make it that method and its own ``PROFILES``;
    :meth:`for_profile` builds one with a profile's settings and a user's overrides on top.
    ``precision``/``channels_last`` ``"auto"`` pick bf16 with channels-last where the processor has
    bf16 (CPU) and mixed precision on a GPU.
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
    # is drawn around them instead (pairless.selfsup.hot_spots), each structure as often as any other
    hot_fraction: float = Field(0.0, ge=0, le=1)
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"

    @classmethod
    def for_profile(cls: type[C], profile: str, **overrides) -> C:
        """The profile's settings (e.g. ``quick`` or ``paper``) with ``overrides`` (e.g. from a YAML file) on top."""
        if profile not in cls.PROFILES:
            raise PairlessError(f"unknown profile {profile!r}; use one of {', '.join(cls.PROFILES)}")
        three_d = cls.PROFILES_3D.get(profile, {}) if overrides.get("ndim") == 3 else {}
        return cls.from_dict({**cls.PROFILES[profile], **three_d, **overrides})


class N2VConfig(SelfSupervisedConfig):
    """Noise2Void / N2V2 / structN2V training (notes/n2v.md); defaults are the ``quick`` profile.

    ``profile="paper"`` gives seed 000's settings (lr 0.004, batch 32, 150 epochs × 200 steps,
    CSBDeep's halving of the learning rate on a validation plateau).  ``n2v2`` switches to median
    replacement, blur-pool and no top skip (Höck et al. 2022).  ``roi`` is the side of the
    neighbourhood a masked pixel's replacement is drawn from (5: the nearest, most similar
    neighbours, as in n2v's BSD68 reproduction).
    """

    PROFILES: ClassVar[dict[str, dict]] = {
        # 0.2 % masked stays: 2 % gained 0.22 dB on one 512² image (σ 25, 600 steps) but lost 1.56 dB
        # in `pairless demo`'s PET study (measured; see the closing note of the self-supervised issue)
        "quick": {},
        "paper": {"batch_size": 32, "steps": 150 * 200, "val_every": 200, "lr": 0.004, "lr_schedule": "plateau"},
    }

    mask_fraction: float = Field(0.002, gt=0, le=0.25)
    roi: int = Field(5, ge=3, le=21)
    n2v2: bool = False
    struct_mask: Literal["none", "horizontal", "vertical"] = "none"
    struct_span: int = Field(5, ge=3, le=21)
    residual: bool = False


class Ne2NeConfig(SelfSupervisedConfig):
    """Neighbor2Neighbor (Huang et al. 2021): ``gamma`` is the regulariser's final weight, ramped up from 0.

    Patches are sub-sampled to half their size for the loss, so they must be multiples of ``2**(depth+1)``.
    """

    PROFILES: ClassVar[dict[str, dict]] = {
        "quick": {},
        # the official recipe: 100 epochs at lr 3e-4 halved every 20, batch 4 of 256², 48-channel U-Net
        "paper": {"batch_size": 4, "patch_size": 256, "steps": 100_000, "val_every": 1000, "lr": 3e-4, "filters": 48},
    }

    gamma: float = Field(2.0, ge=0)


class BSNConfig(SelfSupervisedConfig):
    """Blind-spot network by construction (Laine et al. 2019), every pixel a target.

    ``noise`` picks the Bayesian posterior step: ``gaussian`` (σ from ``sigma`` in image units, or
    estimated from the images), ``poisson-gaussian`` (variance ``a·x + b`` fitted from the images) or
    ``none`` (the blind-spot mean alone, trained with MSE).  ``batch_norm`` adds batch norm to the
    network's branch (see :mod:`pairless.nets.blindspot`).
    """

    PROFILES: ClassVar[dict[str, dict]] = {
        "quick": {"lr": 1e-3},
        "paper": {"batch_size": 4, "patch_size": 256, "steps": 100_000, "val_every": 1000, "lr": 3e-4, "filters": 48,
                  "depth": 4},
    }

    noise: Literal["gaussian", "poisson-gaussian", "none"] = "gaussian"
    sigma: float | None = Field(None, gt=0)
    batch_norm: bool = False


class ZSN2NConfig(SelfSupervisedConfig):
    """Zero-Shot Noise2Noise (Mansour & Heckel 2023): a two-layer network fitted to one image in seconds.

    ``filters`` is the hidden width (the paper's 48); ``depth`` is unused (the network does not pool).
    """

    PROFILES: ClassVar[dict[str, dict]] = {
        "quick": {},
        "paper": {"steps": 2000},
    }

    filters: int = Field(48, ge=1)
    patch_size: int = Field(128, ge=8)
    batch_size: int = Field(4, ge=1)
    steps: int = Field(300, ge=1)
    val_every: int = Field(50, ge=1)
    lr: float = Field(1e-3, gt=0)
    lr_schedule: Literal["cosine", "plateau", "constant", "step"] = "step"


class N2NConfig(SelfSupervisedConfig):
    """Noise2Noise (Lehtinen et al. 2018) on pairs of independent acquisitions of one object.

    The schedule and U-Net are the other methods'.  ``context`` > 0 (with ``ndim`` 3) makes the
    network 2.5D: a 2D U-Net that sees that many neighbouring slices on each side
    (:mod:`pairless.nets.context`); ``residual`` adds the input to the output; ``batch_norm`` off
    suits patches whose slices are too alike for batch statistics (measured in the PET study).
    """

    PROFILES: ClassVar[dict[str, dict]] = {
        "quick": {},
        # the paper's recipe for its Gaussian/Poisson experiments: batch 4 of 256², Adam 3e-4, ~300k steps
        "paper": {"batch_size": 4, "patch_size": 256, "steps": 300_000, "val_every": 1000, "lr": 3e-4, "filters": 48},
    }

    context: int = Field(0, ge=0, le=8, description="neighbouring slices on each side a 2D network sees (ndim 3)")
    batch_norm: bool = True
    residual: bool = False
    # both ways (A → B and B → A) for exchangeable halves; one way when the first image of each pair is
    # the better input (the larger share of an unequal split: closer to the full frame's noise)
    symmetric: bool = True
