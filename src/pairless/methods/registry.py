"""Every method pairless has, one entry each: the CLI's ``fit`` commands, napari's lists, the model-folder
loader, the BMZ export's citations, the API and the experiments all read what they know of a method here.

To add a method (one new file, one entry):
1. write ``methods/<name>.py`` with its config class (a :class:`~pairless.config.Config` with ``PROFILES``)
   and what makes it that method, the paper's equation in the docstring: a self-supervised method is an
   ``Objective`` (network + loss, :mod:`pairless.training.selfsup`); an unpaired or supervised one has
   ``CONFIG``, ``train(noisy, clean, *, config, out, ...) -> (config, weights)`` and
   ``load(config, weights)``;
2. add its :class:`MethodSpec` to :data:`SPECS` below (kind, title, where it lives, citations, own options).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pairless.config import Config
from pairless.errors import PairlessError

Kind = Literal["classical", "self-supervised", "paired-acquisitions", "unpaired", "supervised", "pretrained"]
#: the kinds `pairless fit` trains; "paired-acquisitions" trains on two noisy images of one object
LEARNED: tuple[Kind, ...] = ("self-supervised", "paired-acquisitions", "unpaired", "supervised")
#: the kinds a model folder can hold: a "pretrained" one comes from `pairless pretrain` (clean public images
#: with synthetic noise) and is used as it is or as the start of a fine-tuning
MODEL_KINDS: tuple[Kind, ...] = (*LEARNED, "pretrained")


@dataclass(frozen=True)
class Citation:
    text: str
    doi: str


@dataclass(frozen=True)
class Option:
    """A setting of the method's own that ``pairless fit NAME`` offers as ``flag`` (a bool flag sets True)."""

    flag: str
    field: str
    help: str
    type: type = str
    default: Any = None  # shown in --help; None: the profile's value unless given
    required: bool = False


@dataclass(frozen=True)
class MethodSpec:
    """What pairless knows of one method.  ``where`` is ``"module:Name"`` of its ``Objective``
    (self-supervised and paired-acquisition methods) or ``"module"`` with ``CONFIG``, ``train`` and ``load``
    (unpaired, supervised).
    """

    name: str
    kind: Kind
    title: str
    help: str  # `pairless fit NAME --help`: a first line, then the details and an example
    where: str = ""
    citations: tuple[Citation, ...] = ()
    #: config field -> citations added when the field is set (not False, None or "none")
    variant_citations: dict[str, tuple[Citation, ...]] = field(default_factory=dict)
    options: tuple[Option, ...] = ()
    three_d: bool = False  # offers --3d (a 3D network on ZYX volumes)
    processes: bool = False  # offers --devices (data-parallel training)
    paper_profile: str = "the method paper's schedule, GPU"

    def implementation(self):
        module, _, name = self.where.partition(":")
        found = importlib.import_module(module)
        return getattr(found, name) if name else found

    @property
    def config_class(self) -> type[Config]:
        found = self.implementation()
        return found.config_class if self.kind in ("self-supervised", "paired-acquisitions") else found.CONFIG

    def configure(self, profile: str = "quick", config: Config | dict | None = None, **settings) -> Config:
        """The method's config: ``config`` if it is one, else the profile's settings with ``config`` (a dict,
        e.g.
        read from YAML) and ``settings`` on top.  ``init`` (start from the prior) is refused in one line by a
        method that cannot take it."""
        given = {**(config if isinstance(config, dict) else {}), **settings}
        if "init" in given and not any(o.field == "init" for o in self.options):
            if given["init"] not in (None, "none"):
                raise PairlessError(
                    f"{self.name} cannot start from the prior (--init {given['init']}); only"
                    f" {', '.join(names_with_option('init'))} take --init prior"
                )
            settings.pop("init", None)
            config = {k: v for k, v in config.items() if k != "init"} if isinstance(config, dict) else config
        if isinstance(config, Config):
            # validated like the config's own fields (model_copy would take norm="batchnorm" as it is)
            return config.from_dict({**config.model_dump(), **settings}) if settings else config
        return self.config_class.for_profile(profile, **{**(config or {}), **settings})

    def fit(
        self,
        data: Sequence,
        *,
        out: str | Path,
        config: Config,
        clean: Sequence | None = None,
        axes: str | None = None,
        seed: int = 0,
        progress: bool = True,
        resume: bool | None = None,
        overwrite: bool = False,
        devices: int = 1,
        callbacks: Sequence = (),
        **options,
    ):
        """Train into the model folder ``out`` and return the trained denoiser (``None`` on a data-parallel
        run's other processes).  ``data`` are the noisy images (pairs of them for paired acquisitions);
        ``clean`` the clean set of an unpaired or supervised method; ``overwrite`` lets the run replace a
        model already in ``out`` (:func:`pairless.training.modelio.claim_model_folder`)."""
        from pairless.training import selfsup

        if self.kind in ("self-supervised", "paired-acquisitions"):
            written = selfsup.train(
                self.implementation()(config),
                list(data),
                axes=axes,
                out=Path(out),
                seed=seed,
                progress=progress,
                resume=resume,
                overwrite=overwrite,
                devices=devices,
                callbacks=callbacks,
            )
        elif self.kind in ("unpaired", "supervised"):
            written = self.implementation().train(
                list(data),
                list(clean or []),
                config=config,
                out=Path(out),
                seed=seed,
                progress=progress,
                resume=resume,
                overwrite=overwrite,
                **options,
            )
        else:
            raise PairlessError(
                f"{self.name} is a classical filter: it needs no training; use it in `pairless denoise`"
            )
        return None if written is None else self.load(*written)

    def load(self, config: dict, weights: dict, **prediction_options):
        """The denoiser of a model folder's ``config.yaml`` and weights (``tile``, ``overlap``, ``tta``)."""
        if self.kind in ("self-supervised", "paired-acquisitions"):
            from pairless.training import selfsup

            objective = self.implementation()
            return selfsup.load_denoiser(objective, config, weights, **prediction_options)
        return self.implementation().load(config, weights, **prediction_options)

    def cite(self, config: dict) -> list[Citation]:
        """The papers a model trained with ``config`` (a model folder's ``config.yaml``) follows."""
        extra = [
            c
            for key, cites in self.variant_citations.items()
            if config.get(key) not in (None, False, "none")
            for c in cites
        ]
        return [*self.citations, *extra]


def _cite(text: str, doi: str) -> tuple[Citation, ...]:
    return (Citation(text, doi),)


_PRIOR_CITATION = _cite(
    "Zhang, Li, Zuo, Zhang, Van Gool, Timofte. Plug-and-Play Image Restoration With Deep Denoiser "
    "Prior. IEEE TPAMI 2022.",
    "10.1109/TPAMI.2021.3088914",
)
#: `pairless fit ne2ne|r2r --init prior`: the shipped prior, calibrated to the training images, is the start
_INIT = Option(
    "--init",
    "init",
    "none | prior: start from the shipped prior (a noise-aware denoiser) calibrated to the training images"
    " instead of random weights; 2D only.",
)


SPECS: tuple[MethodSpec, ...] = (
    MethodSpec(
        "n2v",
        "self-supervised",
        "Noise2Void",
        "Train Noise2Void (loss on ~0.2% of pixels; N2V2, structN2V) on noisy images alone.\n\n"
        "For most images `pairless fit ne2ne` (every pixel a target) learns far more per CPU-second.\n"
        "Example: pairless fit n2v stack.tif --axes SYX --out n2v_model/ --profile quick\n"
        "(on 4 GPUs: add --devices 4, or run `torchrun --nproc_per_node=4 -m pairless fit n2v ...`)",
        "pairless.methods.n2v:N2V",
        _cite(
            "Krull, Buchholz, Jug. Noise2Void - Learning Denoising from Single Noisy Images. CVPR 2019.",
            "10.1109/CVPR.2019.00223",
        ),
        variant_citations={
            "n2v2": _cite(
                "Höck et al. N2V2 - Fixing Noise2Void Checkerboard Artifacts with Modified Sampling "
                "Strategies and a Tweaked Network Architecture. ECCV Workshops 2022.",
                "10.1007/978-3-031-25069-9_33",
            ),
            "struct_mask": _cite(
                "Broaddus, Krull, Weigert, Schmidt, Myers. Removing Structured Noise with "
                "Self-Supervised Blind-Spot Networks. ISBI 2020.",
                "10.1109/ISBI45749.2020.9098336",
            ),
        },
        options=(
            Option("--n2v2", "n2v2", "N2V2: median replacement, blur-pool, no top skip.", bool),
            Option("--struct-mask", "struct_mask", "structN2V line mask: horizontal | vertical."),
        ),
        three_d=True,
        processes=True,
    ),
    MethodSpec(
        "ne2ne",
        "self-supervised",
        "Neighbor2Neighbor",
        "Train Neighbor2Neighbor (sub-sampled neighbour pairs, every pixel a target), 2D or 3D."
        " Recommended.\n\nThe fastest learner per CPU-second of pairless's self-supervised methods"
        " (benchmarks/selfsup_quality.py).\n\nExample: pairless fit ne2ne stack.tif --axes SYX --out"
        " ne2ne_model/",
        "pairless.methods.ne2ne:Ne2Ne",
        _cite(
            "Huang, Li, Jia, Lu, Liu. Neighbor2Neighbor: Self-Supervised Denoising from Single Noisy Images. "
            "CVPR 2021.",
            "10.1109/CVPR46437.2021.01454",
        ),
        variant_citations={"init": _PRIOR_CITATION},
        options=(_INIT,),
        three_d=True,
        processes=True,
    ),
    MethodSpec(
        "r2r",
        "self-supervised",
        "Recorrupted-to-Recorrupted",
        "Train Recorrupted-to-Recorrupted (R2R; GR2R for Poisson-Gaussian noise): every pixel a target.\n\n"
        "Two copies of each noisy patch, y + α·s·z and y − s·z/α, with s² = a·y + b the noise model fitted"
        " on the\nimages (or --sigma), train one from the other: an unbiased estimate of the supervised"
        " loss.\n"
        "Example: pairless fit r2r noisy/*.tif --axes SYX --out r2r_model/",
        "pairless.methods.r2r:R2R",
        (
            *_cite(
                "Pang, Zheng, Quan, Ji. Recorrupted-to-Recorrupted: Unsupervised Deep Learning for Image "
                "Denoising. CVPR 2021.",
                "10.1109/CVPR46437.2021.00208",
            ),
            *_cite(
                "Monroy, Bacca, Tachella. Generalized Recorrupted-to-Recorrupted: Self-Supervised Learning "
                "Beyond Gaussian Noise. CVPR 2025.",
                "10.48550/arXiv.2412.04648",
            ),
        ),
        variant_citations={"init": _PRIOR_CITATION},
        options=(
            Option("--noise", "noise", "Noise model: poisson-gaussian (a·x + b fitted) | gaussian."),
            Option("--sigma", "sigma", "Gaussian noise σ in image units (default: fitted).", float),
            Option("--alpha", "alpha", "R2R's α, the scale of the recorruption (default 0.5).", float),
            _INIT,
        ),
        three_d=True,
        processes=True,
    ),
    MethodSpec(
        "bsn",
        "self-supervised",
        "blind-spot network",
        "Train a blind-spot network (Laine et al. 2019) with the Bayesian posterior step.\n\n"
        "Every pixel is a training target and the centre pixel is put back by the posterior mean, with\n"
        "the noise model fitted from the images (or --sigma).\n"
        "Example: pairless fit bsn noisy/*.tif --axes YX --out bsn_model/ --noise poisson-gaussian",
        "pairless.methods.bsn:BSN",
        _cite(
            "Laine, Karras, Lehtinen, Aila. High-Quality Self-Supervised Deep Image Denoising. NeurIPS 2019.",
            "10.48550/arXiv.1901.10277",
        ),
        options=(
            Option("--noise", "noise", "Posterior step: gaussian | poisson-gaussian | none."),
            Option("--sigma", "sigma", "Gaussian noise σ in image units (default: estimated).", float),
        ),
        processes=True,
    ),
    MethodSpec(
        "zsn2n",
        "self-supervised",
        "Zero-Shot Noise2Noise",
        "Fit Zero-Shot Noise2Noise (a 21k-parameter network) to one image in seconds.\n\n"
        "Example: pairless fit zsn2n image.tif --out zsn2n_model/",
        "pairless.methods.zsn2n:ZSN2N",
        _cite(
            "Mansour, Heckel. Zero-Shot Noise2Noise: Efficient Image Denoising without any Data. CVPR 2023.",
            "10.1109/CVPR52729.2023.01347",
        ),
    ),
    MethodSpec(
        "n2n",
        "paired-acquisitions",
        "Noise2Noise (pairs)",
        "Train Noise2Noise on pairs of independent acquisitions (e.g. two halves of a PET scan's counts).\n\n"
        "The held-out loss of one acquisition against the other picks the best checkpoint without any\n"
        "clean image.  Apply the model to the full acquisition, or to each half and average.\n"
        "Example: pairless simulate pet --out sim/ --splits 2; pairless fit n2n --pairs "
        "sim/pet_2min_part1_kBq_per_mL.nii.gz\nsim/pet_2min_part2_kBq_per_mL.nii.gz --out n2n_model/",
        "pairless.methods.n2n:N2N",
        _cite(
            "Lehtinen et al. Noise2Noise: Learning Image Restoration without Clean Data. ICML 2018.",
            "10.48550/arXiv.1803.04189",
        ),
        three_d=True,
        processes=True,
    ),
    MethodSpec(
        "iscl",
        "unpaired",
        "ISCL",
        "Train ISCL on unpaired noisy and clean images (seed 002); denoise with `pairless denoise"
        " MODEL_DIR`.\n\nExample: pairless fit iscl --noisy noisy/ --clean clean/ --out iscl_model/ --norm"
        " optimized",
        "pairless.methods.iscl",
        _cite(
            "Lee, Jeong. ISCL: Interdependent Self-Cooperative Learning for Unpaired Image Denoising. "
            "IEEE TMI 2021.",
            "10.1109/TMI.2021.3096142",
        ),
        options=(
            Option(
                "--norm",
                "norm",
                "optimized (IN/SpecNorm/SwitchNorm) | bin (original ISCL) | bn | ln | gn | in | sn.",
                default="optimized",
            ),
        ),
        paper_profile="official: 8k iterations, GPU",
    ),
    MethodSpec(
        "supervised",
        "supervised",
        "supervised reference",
        "Train a supervised DnCNN / RED-CNN on clean/noisy pairs (matched by file name).\n\n"
        "Example: pairless fit supervised --noisy noisy/ --clean clean/ --arch dncnn --out dncnn_model/",
        "pairless.methods.supervised",
        options=(Option("--arch", "arch", "dncnn | redcnn", required=True),),
        paper_profile="8k iterations, GPU",
    ),
    MethodSpec(
        "adn",
        "unpaired",
        "ADN",
        "Train ADN (artifact disentanglement network) on unpaired noisy and clean images.\n\n"
        "A baseline of seed 002's Table 2.\n"
        "Example: pairless fit adn --noisy noisy/ --clean clean/ --out adn_model/",
        "pairless.methods.adn",
        _cite(
            "Liao, Lin, Zhou, Luo. ADN: Artifact Disentanglement Network for Unsupervised Metal Artifact "
            "Reduction. IEEE TMI 2020.",
            "10.1109/TMI.2019.2933425",
        ),
        paper_profile="official networks, ISCL's 8k iterations of batch 64, GPU",
    ),
    MethodSpec(
        "uidnet",
        "unpaired",
        "UIDNet",
        "Train UIDNet (a conditional noise GAN + a DnCNN on its pseudo pairs) on unpaired noisy and clean"
        " images.\n\nA baseline of seed 002's Table 2.\n"
        "Example: pairless fit uidnet --noisy noisy/ --clean clean/ --out uidnet_model/",
        "pairless.methods.uidnet",
        _cite(
            "Hong, Fan, Jiang, Feng. End-to-End Unpaired Image Denoising with Conditional Adversarial "
            "Networks. AAAI 2020.",
            "10.1609/aaai.v34i04.5834",
        ),
        paper_profile="official networks, ISCL's 8k iterations of batch 64, GPU",
    ),
    MethodSpec(
        "cagan",
        "supervised",
        "CaGAN",
        "Train CaGAN (cycle GAN with criss-cross and channel attention) on clean/noisy pairs (matched by"
        " file name).\n\nA paired baseline of seed 002's Table 2.\n"
        "Example: pairless fit cagan --noisy noisy/ --clean clean/ --out cagan_model/",
        "pairless.methods.cagan",
        _cite(
            "Huang et al. CaGAN: A Cycle-Consistent Generative Adversarial Network With Attention for "
            "Low-Dose CT Imaging. IEEE TCI 2020.",
            "10.1109/TCI.2020.3012928",
        ),
        paper_profile="the port's networks, ISCL's 8k iterations of batch 64, GPU",
    ),
    MethodSpec(
        "prior",
        "pretrained",
        "prior (zero-shot)",
        "Denoise with the prior that ships with pairless, calibrated to each image's noise.\n\n"
        "Trained once on clean public images (natural, fluorescence, EM) with synthetic Gaussian and\n"
        "Poisson-Gaussian noise; `pairless pretrain` trains another.\n"
        "Example: pairless denoise prior image.tif --out denoised/",
        "pairless.methods.prior",
        _PRIOR_CITATION,
        variant_citations={
            "vst": _cite(
                "Herbreteau, Unser. Self-Calibrated Variance-Stabilizing Transformations for Real-World Image"
                " Denoising. ICCV 2025.",
                "10.48550/arXiv.2407.17399",
            ),
        },
        paper_profile="the recipe's release training (hours on a CPU; resumable)",
    ),
    MethodSpec(
        "gaussian",
        "classical",
        "Gaussian filter",
        "A Gaussian filter (σ in pixels).",
        "pairless.methods.classical",
    ),
    MethodSpec(
        "median",
        "classical",
        "median filter",
        "A median filter (width in pixels).",
        "pairless.methods.classical",
    ),
    MethodSpec(
        "nlm",
        "classical",
        "non-local means",
        "Non-local means (scikit-image).",
        "pairless.methods.classical",
        _cite(
            "Buades, Coll, Morel. A non-local algorithm for image denoising. CVPR 2005.",
            "10.1109/CVPR.2005.38",
        ),
    ),
    MethodSpec(
        "bm3d",
        "classical",
        "BM3D",
        "BM3D (the bm3d package, optional extra).",
        "pairless.methods.classical",
        _cite(
            "Dabov, Foi, Katkovnik, Egiazarian. Image Denoising by Sparse 3-D Transform-Domain Collaborative "
            "Filtering. IEEE TIP 2007.",
            "10.1109/TIP.2007.901238",
        ),
    ),
)

#: the papers of the networks a model may be built on, by class name (a BMZ package cites its network too)
NETWORK_CITATIONS: dict[str, tuple[Citation, ...]] = {
    "UNet": _cite(
        "Ronneberger, Fischer, Brox. U-Net: Convolutional Networks for Biomedical Image Segmentation. "
        "MICCAI 2015.",
        "10.1007/978-3-319-24574-4_28",
    ),
    "DnCNN": _cite(
        "Zhang, Zuo, Chen, Meng, Zhang. Beyond a Gaussian Denoiser: Residual Learning of Deep CNN for "
        "Image Denoising. IEEE TIP 2017.",
        "10.1109/TIP.2017.2662206",
    ),
    "REDCNN": _cite(
        "Chen et al. Low-Dose CT With a Residual Encoder-Decoder Convolutional Neural Network. "
        "IEEE TMI 2017.",
        "10.1109/TMI.2017.2715284",
    ),
}

_BY_NAME = {spec.name: spec for spec in SPECS}


def names(*kinds: Kind) -> list[str]:
    """The methods of the given kinds (all when none are given), in the registry's order."""
    return [s.name for s in SPECS if not kinds or s.kind in kinds]


def get(name: str, *, kinds: Sequence[Kind] = ()) -> MethodSpec:
    """The spec of ``name``, or one line naming the methods there are (of ``kinds``, when given)."""
    spec = _BY_NAME.get(name)
    if spec is None or (kinds and spec.kind not in kinds):
        choices = names(*kinds)
        raise PairlessError(f"unknown method {name!r}; use one of {', '.join(choices)}")
    return spec


def names_with_option(field: str) -> list[str]:
    """The methods that offer the setting ``field`` as a ``pairless fit`` option (e.g. ``init``)."""
    return [s.name for s in SPECS if any(o.field == field for o in s.options)]


def is_method(name: str, *kinds: Kind) -> bool:
    spec = _BY_NAME.get(name)
    return spec is not None and (not kinds or spec.kind in kinds)


def load_model(folder: str | Path, **prediction_options):
    """The denoiser in a model folder, by the method its ``config.yaml`` names (nothing is unpickled)."""
    from pairless.training.modelio import read_model_folder

    config, weights = read_model_folder(folder, methods=names(*MODEL_KINDS))
    return get(config["method"]).load(config, weights, **prediction_options)
