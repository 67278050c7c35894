"""Seed 002's EM study (Table 2, Fig. 3) on public clean EM slices with simulated charge and film noise.

The paper's noisy EM sets are not public, so the clean ISBI-2012 ssTEM slices stand in for the
clean domain and :mod:`pairless.sim.em` makes the noisy one — by default as the paper did, by
pasting simulated noise-only images onto the clean slices (``noise_mode="additive"``).  The slices
are split into ``folds`` cross-validation folds; in each fold the test slices are held out and the
remaining training slices are split in half, as in the official ISCL demo: the first half is the
**clean set**, the second half the **noisy set** (those sections plus simulated noise).  The sets
are disjoint, so the unpaired methods never see a clean image of a noisy section.  Who sees what:

* ISCL (every normalization preset), ADN and UIDNet: the noisy set and the clean set, unpaired;
* DnCNN / U-Net / RED-CNN, CaGAN and the linear filter (paired references): the noisy set *with its own
  clean images*; the linear filter fitted by least squares is the ceiling of every linear filter;
* colour-noise BM3D: the noise's power spectrum estimated from the noisy set and the clean set
  (unpaired statistics, :func:`pairless.noise_psd.from_sets`), then BM3D with it on each test image;
* Noise2Void, structN2V (horizontal mask), Neighbor2Neighbor, the blind-spot network and Zero-Shot
  Noise2Noise (self-supervised): the noisy set only;
* classical filters: nothing; each test image tunes its filter by J-invariance (Noise2Self);
* every method is scored on the same test slices (noise drawn once per slice and noise type).

PSNR and SSIM use data range 1.0 (images scaled to [0, 1]); SSIM is scikit-image's default (7×7
uniform window, sample covariance, borders excluded).  Numbers are means over a fold's test
images, then mean ± sd over folds; the normalization presets are also compared image by image
(Wilcoxon signed-rank test against ``optimized``, over every test image of every fold run).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pairless.denoiser import Denoiser, denoise_array
from pairless.errors import PairlessError
from pairless.sim.em import MODES, NOISE_TYPES, em_noise
from pairless.sim.em_folder import read_clean_folder

DEFAULT_CLEAN = Path("../shared/data/em/isbi2012/train_image")


ISCL_NORMS = ("bn", "ln", "gn", "sn", "bin", "optimized")


SELF_SUPERVISED = ("n2v", "structn2v", "ne2ne", "bsn", "zsn2n")


# the other rows of seed 002's Table 2, each trained by its own method (pairless.methods)
TABLE2_BASELINES = ("cagan", "uidnet", "adn")


# Table 2's rows that are not reproduced, with why: (label, type, reason)
NOT_REPRODUCED = {
    "quan": (
        "Quan et al. (ICCVW 2019), asymmetrically cyclic GAN",
        "unpaired",
        "not reproduced: no code or paper text available",
    ),
}


METHODS = (
    "noisy",
    "gaussian",
    "median",
    "nlm",
    "wiener",
    "bm3d-psd",
    "dncnn",
    "unet",
    "redcnn",
    "cagan",
    *SELF_SUPERVISED,
    "uidnet",
    "adn",
    *(f"iscl-{n}" for n in ISCL_NORMS),
)


# Seed 002, Table 2: (charge PSNR, charge SSIM, film PSNR, film SSIM)
PAPER_TABLE2 = {
    "dncnn": (28.27, 0.9172, 27.55, 0.8964),
    "redcnn": (28.61, 0.9230, 28.02, 0.9049),
    "cagan": (28.60, 0.9186, 28.03, 0.9020),
    "quan": (22.32, 0.8785, 23.44, 0.8288),
    "uidnet": (23.11, 0.8592, 21.34, 0.7826),
    "adn": (25.67, 0.8686, 24.37, 0.8535),
    "iscl-bn": (24.62, 0.8969, 20.63, 0.7568),
    "iscl-ln": (24.61, 0.8945, 23.99, 0.8829),
    "iscl-gn": (24.86, 0.9016, 24.74, 0.8879),
    "iscl-sn": (25.12, 0.9044, 26.80, 0.8948),
    "iscl-bin": (27.12, 0.9054, 27.06, 0.8915),
    "iscl-optimized": (27.11, 0.9076, 27.86, 0.8992),
}


COLUMNS = ("charge_psnr", "charge_ssim", "film_psnr", "film_ssim")


LABELS = {
    "noisy": "noisy input",
    "gaussian": "Gaussian filter (J-invariance)",
    "median": "median filter (J-invariance)",
    "nlm": "non-local means (J-invariance)",
    "wiener": "linear filter fitted with the pairs (ceiling)",
    "bm3d-psd": "colour-noise BM3D, PSD from the unpaired sets",
    "cagan": "CaGAN (paired)",
    "uidnet": "UIDNet",
    "adn": "ADN",
    "dncnn": "DnCNN (paired)",
    "unet": "U-Net (paired)",
    "redcnn": "RED-CNN (paired)",
    "n2v": "Noise2Void",
    "structn2v": "structN2V, horizontal mask",
    "ne2ne": "Neighbor2Neighbor",
    "bsn": "blind-spot network (mean; no posterior step)",
    "zsn2n": "Zero-Shot Noise2Noise",
    **{f"iscl-{n}": f"ISCL + {n.upper()}" for n in ISCL_NORMS if n != "optimized"},
    "iscl-sn": "ISCL + SwitchNorm",
    "iscl-optimized": "ISCL optimized (IN / SpecNorm / SwitchNorm)",
}


# the paper's P.S./U.S. plus what it had no rows for
TYPES = {
    "noisy": "input",
    "gaussian": "classical",
    "median": "classical",
    "nlm": "classical",
    "wiener": "paired",
    "bm3d-psd": "unpaired statistics",
    "cagan": "paired",
    "uidnet": "unpaired",
    "adn": "unpaired",
    "dncnn": "paired",
    "unet": "paired",
    "redcnn": "paired",
    **{m: "self-supervised" for m in SELF_SUPERVISED},
    **{f"iscl-{n}": "unpaired" for n in ISCL_NORMS},
}


# seed 002's orderings the report checks: (ahead, behind); its normalization presets, then its rows of other
# methods (Table 2: CaGAN above ISCL; among the unpaired ISCL > ADN > UIDNet; Quan et al. not reproduced)
CLAIMS = tuple((a, b) for a in ("iscl-bin", "iscl-optimized") for b in ("iscl-bn", "iscl-ln", "iscl-gn")) + (
    ("cagan", "iscl-optimized"),
    ("iscl-optimized", "adn"),
    ("adn", "uidnet"),
    ("iscl-optimized", "uidnet"),
)


@dataclass(frozen=True)
class Profile:
    folds: int  # the split
    run_folds: int  # how many of them are trained and scored
    crop: int | None  # centre crop of every slice (None: whole slices)
    noise_mode: str = "additive"  # how the noise meets the image (pairless.sim.em)


PROFILES = {
    "quick": Profile(folds=3, run_folds=3, crop=256),
    "paper": Profile(folds=4, run_folds=4, crop=None),
}


@dataclass(frozen=True)
class FoldData:
    """One fold's training data for one noise type (all images in [0, 1])."""

    noisy: list[np.ndarray]  # the noisy set
    clean: list[np.ndarray]  # the clean set: other sections, unpaired with ``noisy``
    noisy_truth: list[np.ndarray]  # the noisy set's own clean images: for paired references only
    noise: str = "charge"  # the noise type, for methods whose augmentation depends on its direction
    mode: str = "additive"  # how it met the image (pairless.sim.em)


@dataclass(frozen=True)
class Method:
    """A row of the table: ``fit(data, out=, profile=, seed=, progress=)`` returns a denoiser."""

    name: str
    fit: Callable[..., Denoiser]
    label: str = ""
    # what the row's scores depend on beyond the data, the split, the seed and the profile (ISCL: its
    # whole config), as a function of the profile; part of the key under which --reuse finds the row
    settings: Callable[[str], dict] | None = None


class Identity(Denoiser):
    """The noisy input itself, as the table's baseline row."""

    def forward(self, y: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
        return y


def method(name: str, *, iscl_steps: int | None = None) -> Method:
    """The study's method ``name`` (one of :data:`METHODS`); ``iscl_steps`` overrides ISCL's profile."""
    if name == "noisy":
        fit = _fit_identity
    elif name in ("gaussian", "median", "nlm"):
        fit = _classical(name)
    elif name == "wiener":
        fit = _fit_wiener
    elif name in ("dncnn", "unet", "redcnn"):
        fit = _supervised(name)
    elif name in SELF_SUPERVISED:
        fit = _self_supervised(name)
    elif name == "bm3d-psd":
        fit = _fit_bm3d_psd
    elif name in TABLE2_BASELINES:
        return Method(
            name,
            _baseline(name),
            LABELS[name],
            settings=lambda profile: _baseline_config(name, profile).model_dump(mode="json"),
        )
    elif name.startswith("iscl-") and name[5:] in ISCL_NORMS:
        return Method(
            name,
            _iscl(name[5:], iscl_steps),
            LABELS[name],
            settings=lambda profile: _iscl_config(profile, iscl_steps).model_dump(mode="json"),
        )
    else:
        raise PairlessError(f"unknown EM study method {name!r}; use some of {', '.join(METHODS)}")
    return Method(name, fit, LABELS[name])


@dataclass
class StudyResult:
    rows: list[dict]  # one per method: mean and sd over folds, and the paper's numbers
    fold_rows: list[dict]  # one per method, fold and noise type
    image_rows: list[dict] = field(default_factory=list)  # one per method, fold, noise type and test image
    examples: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # noise -> name -> image
    input_psnr: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0  # this run's wall time
    reused: list[str] = field(default_factory=list)  # "<noise>/fold<k>/<method>" taken from an earlier run


def run_em_study(
    clean_images: Sequence[np.ndarray],
    *,
    methods: Sequence[Method],
    out: Path,
    profile: str = "quick",
    folds: int | None = None,
    run_folds: int | None = None,
    noise_types: Sequence[str] = NOISE_TYPES,
    noise_mode: str | None = None,
    seed: int = 0,
    reuse: bool = False,
    progress: bool = True,
) -> StudyResult:
    """Cross-validate ``methods`` on ``clean_images`` (2D, [0, 1]) with simulated EM noise.

    ``out`` receives each trained model folder and its test scores (``out/models/<noise>/fold<k>/<method>``).
    ``folds``, ``run_folds`` and ``noise_mode`` override the profile's.  With ``reuse``, a row whose
    folder already holds scores of the same data, split, seed, profile and method settings (ISCL:
    every setting of its config) is read back instead of trained again (so a study can be completed
    in several sittings; delete a row's folder, or leave ``reuse`` off, after changing that method's
    code).
    """
    start = time.perf_counter()
    prof = _profile(profile)
    folds = prof.folds if folds is None else folds
    run_folds = min(prof.run_folds if run_folds is None else run_folds, folds)
    noise_mode = prof.noise_mode if noise_mode is None else noise_mode
    if noise_mode not in MODES:
        raise PairlessError(f"unknown EM noise mode {noise_mode!r}; use one of {', '.join(MODES)}")
    images = [_crop(np.asarray(im, np.float32), prof.crop) for im in clean_images]
    n = len(images)
    if folds < 2 or n < max(folds, 2) + 2 or n - n // folds - (n % folds > 0) < 2:
        raise PairlessError(
            f"{n} clean images cannot be split into {folds} folds with a clean and a noisy training set "
            f"each; use at least {folds + 2} images or fewer folds"
        )
    order = np.random.default_rng(seed).permutation(n)
    test_folds = np.array_split(order, folds)
    # each noise's stream is named by the noise, not by its place in noise_types, so that a study cut
    # down to one noise draws the same images (and reuses the same rows) as the whole study
    noisy = {
        kind: [
            em_noise(
                im, kind=kind, mode=noise_mode, rng=np.random.default_rng((seed, NOISE_TYPES.index(kind), i))
            )
            for i, im in enumerate(images)
        ]
        for kind in noise_types
    }
    from pairless.metrics.image import psnr, ssim

    result = StudyResult(rows=[], fold_rows=[])
    result.input_psnr = {
        kind: float(np.mean([psnr(x, y, data_range=1.0) for x, y in zip(noisy[kind], images)]))
        for kind in noise_types
    }
    for fold in range(run_folds):
        test = test_folds[fold]
        held_out = set(test.tolist())
        train = [i for i in order if i not in held_out]
        clean_idx, noisy_idx = train[: len(train) // 2], train[len(train) // 2 :]
        for kind in noise_types:
            data = FoldData(
                noisy=[noisy[kind][i] for i in noisy_idx],
                clean=[images[i] for i in clean_idx],
                noisy_truth=[images[i] for i in noisy_idx],
                noise=kind,
                mode=noise_mode,
            )
            example = int(test[0])
            if fold == 0:
                result.examples[kind] = {"clean": images[example], "noisy input": noisy[kind][example]}
            data_key = _fingerprint(
                profile, seed + fold, noise_mode, test, data, [noisy[kind][i] for i in test]
            )
            for m in methods:
                folder = Path(out) / "models" / kind / f"fold{fold}" / m.name
                row_key = _row_key(data_key, m.settings(profile) if m.settings else {})
                scored = _read_scores(folder, row_key, m.name) if reuse else None
                if scored is None:
                    t0 = time.perf_counter()
                    # the row's scores live beside its model folder: a model folder holds only the model
                    denoiser = m.fit(
                        data, out=folder / "model", profile=profile, seed=seed + fold, progress=progress
                    )
                    t1 = time.perf_counter()
                    outputs = {i: denoise_array(noisy[kind][i], denoiser, axes="YX") for i in test}
                    t2 = time.perf_counter()
                    scored = {
                        "fit_s": round(t1 - t0, 2),
                        "predict_s": round(t2 - t1, 2),
                        "images": {
                            int(i): (
                                psnr(outputs[i], images[i], data_range=1.0),
                                ssim(outputs[i], images[i], data_range=1.0),
                            )
                            for i in test
                        },
                        "example": outputs[example],
                    }
                    _write_scores(folder, row_key, m.name, scored)
                else:
                    result.reused.append(f"{kind}/fold{fold}/{m.name}")
                for i, (p, s) in scored["images"].items():
                    result.image_rows.append(
                        {
                            "method": m.name,
                            "fold": fold,
                            "noise": kind,
                            "image": int(i),
                            "psnr": float(p),
                            "ssim": float(s),
                        }
                    )
                result.fold_rows.append(
                    {
                        "method": m.name,
                        "fold": fold,
                        "noise": kind,
                        "psnr": float(np.mean([p for p, _ in scored["images"].values()])),
                        "ssim": float(np.mean([s for _, s in scored["images"].values()])),
                        "fit_s": scored["fit_s"],
                        "predict_s": scored["predict_s"],
                    }
                )
                if fold == 0 and m.name != "noisy":
                    result.examples[kind][m.label or m.name] = scored["example"]
                if progress:
                    r = result.fold_rows[-1]
                    print(
                        f"[em] fold {fold} {kind:6s} {m.name:16s} PSNR {r['psnr']:.2f} SSIM {r['ssim']:.4f} "
                        f"(fit {r['fit_s']:.0f} s, predict {r['predict_s']:.0f} s)"
                        + (
                            " (reused)"
                            if result.reused and result.reused[-1] == f"{kind}/fold{fold}/{m.name}"
                            else ""
                        ),
                        flush=True,
                    )
    result.rows = _summary(result.fold_rows, methods, noise_types)
    result.seconds = time.perf_counter() - start
    return result


SCORES = "scores.json"


def _fingerprint(profile: str, seed: int, mode: str, test: np.ndarray, data: FoldData, test_noisy) -> str:
    """What a row's scores depend on besides the method's code: settings and every image's bytes."""
    digest = hashlib.sha256(json.dumps([profile, seed, mode, data.noise, [int(i) for i in test]]).encode())
    digest.update(b"augment-by-mode")  # rows scored before augmentation depended on the mode are stale
    for group in (data.noisy, data.clean, data.noisy_truth, test_noisy):
        for image in group:
            digest.update(np.ascontiguousarray(image, dtype=np.float32).tobytes())
    return digest.hexdigest()


def _row_key(data_key: str, settings: dict) -> str:
    """A row's reuse key: the data's, extended by the method's settings when it has any."""
    if not settings:
        return data_key
    return hashlib.sha256((data_key + json.dumps(settings, sort_keys=True)).encode()).hexdigest()


def _read_scores(folder: Path, key: str, name: str) -> dict | None:
    path = folder / SCORES
    if not path.is_file() or not (folder / "example.npy").is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # unreadable: train the row again
    if saved.get("key") != key or saved.get("method") != name:
        return None
    return {
        "fit_s": saved["fit_s"],
        "predict_s": saved["predict_s"],
        "images": {int(i): tuple(v) for i, v in saved["images"].items()},
        "example": np.load(folder / "example.npy"),
    }


def _write_scores(folder: Path, key: str, name: str, scored: dict) -> None:
    from pairless.io.files import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "example.npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(scored["example"], np.float32))
    record = {
        "key": key,
        "method": name,
        "fit_s": scored["fit_s"],
        "predict_s": scored["predict_s"],
        "images": {str(i): [float(p), float(s)] for i, (p, s) in scored["images"].items()},
    }
    with atomic_path(folder / SCORES) as tmp:
        tmp.write_text(json.dumps(record))


def rank_agreement(rows: list[dict], *, names: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Spearman's ρ (with a 95% CI) between our column and Table 2's over the rows both have: {column: stats}.

    ``names`` restricts the rows (e.g. to the normalization presets); columns with fewer than three
    rows are left out.
    """
    from pairless.experiments.stats import spearman

    agreement = {}
    for col in COLUMNS:
        pairs = [
            (r[col], r[f"paper_{col}"])
            for r in rows
            if (names is None or r["method"] in names)
            and np.isfinite(r.get(col, np.nan))
            and np.isfinite(r.get(f"paper_{col}", np.nan))
        ]
        if len(pairs) >= 3:
            agreement[col] = spearman(*zip(*pairs))
    return agreement


def preset_tests(image_rows: list[dict], *, reference: str = "iscl-optimized") -> list[dict]:
    """Each ISCL preset against ``reference``, per noise: Wilcoxon over the test images both were scored on.

    The Holm adjustment runs over every test in the returned list (the family a reader scans).
    """
    from pairless.experiments.stats import holm, paired_test

    tests = []
    for kind in NOISE_TYPES:
        for norm in ISCL_NORMS:
            name = f"iscl-{norm}"
            if name == reference:
                continue
            pair = _paired_scores(image_rows, name, reference, kind)
            if pair is not None:
                tests.append({"preset": name, "versus": reference, "noise": kind, **paired_test(*pair)})
    for t, adjusted in zip(tests, holm([t["p"] for t in tests])):
        t["p_holm"] = adjusted
    return tests


def method_tests(image_rows: list[dict], *, reference: str = "iscl-optimized") -> list[dict]:
    """Every other method's row (not the ISCL presets, see :func:`preset_tests`, nor the input) against
    ``reference``, per noise: Wilcoxon over the test images both were scored on, Holm over the list."""
    from pairless.experiments.stats import holm, paired_test

    names = list(dict.fromkeys(r["method"] for r in image_rows))
    others = [m for m in names if m != "noisy" and not m.startswith("iscl-")]
    tests = []
    for kind in NOISE_TYPES:
        for name in others:
            pair = _paired_scores(image_rows, name, reference, kind)
            if pair is not None:
                tests.append({"method": name, "versus": reference, "noise": kind, **paired_test(*pair)})
    for t, adjusted in zip(tests, holm([t["p"] for t in tests])):
        t["p_holm"] = adjusted
    return tests


def claim_checks(image_rows: list[dict]) -> list[dict]:
    """Seed 002's orderings (BIN / optimized ahead of BN, LN, GN; CaGAN > ISCL > ADN > UIDNet), tested per
    noise here."""
    from pairless.experiments.stats import paired_test

    checks = []
    for kind in NOISE_TYPES:
        for ahead, behind in CLAIMS:
            pair = _paired_scores(image_rows, ahead, behind, kind)
            if pair is None:
                continue
            t = paired_test(*pair)
            if t["mean_diff"] > 0:
                verdict = "holds (p < 0.05)" if t["p"] < 0.05 else "same sign, not significant"
            else:
                verdict = "reversed (p < 0.05)" if t["p"] < 0.05 else "reversed sign, not significant"
            checks.append(
                {"claim": f"{LABELS[ahead]} > {LABELS[behind]}", "noise": kind, **t, "verdict": verdict}
            )
    return checks


def _paired_scores(
    image_rows: list[dict], a: str, b: str, kind: str
) -> tuple[list[float], list[float]] | None:
    scores = {(r["method"], r["fold"], r["image"]): r["psnr"] for r in image_rows if r["noise"] == kind}
    keys = sorted((f, i) for m, f, i in scores if m == a and (b, f, i) in scores)
    if not keys:
        return None
    return [scores[(a, f, i)] for f, i in keys], [scores[(b, f, i)] for f, i in keys]


def reproduce_em(
    out: Path,
    *,
    profile: str = "quick",
    clean: Path | None = None,
    methods: Sequence[str | Method] | None = None,
    noise_mode: str | None = None,
    noise_types: Sequence[str] = NOISE_TYPES,
    run_folds: int | None = None,
    iscl_steps: int | None = None,
    seed: int = 0,
    reuse: bool = False,
    progress: bool = True,
) -> Path:
    """Run the study on a folder of clean EM images and write ``report.md/html`` and CSVs to ``out``.

    ``noise_types`` and ``run_folds`` cut the study down (a subset of the noises, the first folds of
    the profile's split) when the whole of it does not fit the time there is; the report says so.
    ``iscl_steps`` overrides the profile's ISCL training steps (the report says how many ran).
    """
    from pairless.experiments.report import Report
    from pairless.sim.em import noise_figure

    prof = _profile(profile)
    mode = prof.noise_mode if noise_mode is None else noise_mode
    if mode not in MODES:
        raise PairlessError(f"unknown EM noise mode {mode!r}; use one of {', '.join(MODES)}")
    unknown = [k for k in noise_types if k not in NOISE_TYPES]
    if unknown or not noise_types:
        raise PairlessError(
            f"unknown EM noise {', '.join(unknown) or '(none)'}; use some of {', '.join(NOISE_TYPES)}"
        )
    if run_folds is not None and run_folds < 1:
        raise PairlessError(
            f"run_folds must be at least 1 (got {run_folds}); it is how many folds are trained"
        )
    if iscl_steps is not None and iscl_steps < 1:
        raise PairlessError(
            f"iscl_steps must be at least 1 (got {iscl_steps}); it is how many steps ISCL trains"
        )
    chosen = [m if isinstance(m, Method) else method(m, iscl_steps=iscl_steps) for m in methods or METHODS]
    folder = DEFAULT_CLEAN if clean is None else Path(clean)
    if not folder.is_dir():
        raise PairlessError(
            f"clean EM images not found at {str(folder)!r}; pass --clean DIR with clean EM slices "
            "(e.g. ISBI 2012 ssTEM train_image), or run from the repository folder beside shared/data"
        )
    named = read_clean_folder(folder)
    out = Path(out)
    result = run_em_study(
        [im for _, im in named],
        methods=chosen,
        out=out,
        profile=profile,
        noise_mode=mode,
        noise_types=noise_types,
        run_folds=run_folds,
        seed=seed,
        reuse=reuse,
        progress=progress,
    )
    folds_run = len({r["fold"] for r in result.fold_rows})
    first = named[0][1]
    compute_s = sum(r["fit_s"] + r["predict_s"] for r in result.fold_rows)

    report = Report("EM denoising study (seed 002, Table 2): charge and film noise")
    report.add_text(
        f"Profile **{profile}**: {len(named)} clean slices from `{folder}`"
        + (
            f", centre-cropped to {prof.crop}×{prof.crop}"
            if prof.crop and min(first.shape) > prof.crop
            else ""
        )
        + f"; {prof.folds}-fold split, {folds_run} fold(s) run"
        + (" (with one fold there is no sd)" if folds_run < 2 else "")
        + (f"; noise types run: {', '.join(noise_types)}" if tuple(noise_types) != NOISE_TYPES else "")
        + (
            f"; ISCL {_iscl_config(profile, iscl_steps).steps} steps"
            if any(m.name.startswith("iscl-") for m in chosen)
            else ""
        )
        + f"; seed {seed}; wall time {result.seconds / 60:.1f} min"
        + (
            f" ({len(result.reused)} fold rows read back from an earlier run in the same folder; fitting and "
            f"scoring all rows took {compute_s / 60:.1f} min in all)"
            if result.reused
            else ""
        )
        + ". In each fold the test slices are held out and the training slices are split in half: a clean "
        "set and a noisy set (other sections + simulated noise), disjoint as in the official ISCL demo. "
        "ISCL sees both sets unpaired; DnCNN, the U-Net, RED-CNN and the linear filter see the noisy set "
        "paired with its own clean images (the paper's paired supervision); the self-supervised methods see "
        "the noisy set only; the classical filters tune their parameter per test image by J-invariance."
    )
    report.add_text(
        "Metrics: PSNR and SSIM against the clean slice with data range 1.0 (images scaled to [0, 1]); "
        "SSIM is scikit-image's default (7×7 uniform window, sample covariance, image borders excluded). "
        "Mean over a fold's test images, then mean ± sd over folds. "
        "The paper's noisy EM data is not public: noise is simulated (`pairless.sim.em`, default "
        f"parameters, `{mode}` mode"
        + (": noise-only images pasted onto the clean slices, as the paper did" if mode == "additive" else "")
        + "). Seed 002's Table 2 has no noisy-input row, so the noise level (~20 dB) is our choice and "
        "absolute numbers are not comparable with the paper's; the ordering of rows is."
    )
    report.add_text(_headroom_sentence(result))
    report.add_text(_classical_sentence(result))
    report.add_table(
        _display_rows(result.rows) + _not_reproduced_rows(),
        caption="PSNR (dB) / SSIM, mean ± sd over folds; paper = seed 002 Table 2",
    )
    # the first named table is the report's results.csv: the full-precision rows
    report.add_table(
        result.rows, caption="The same numbers at full precision (sd is nan with one fold)", name="results"
    )
    report.add_text(_ordering_sentence(result.rows))
    tests = preset_tests(result.image_rows)
    if tests:
        report.add_table(
            _round(tests),
            caption=(
                "Each ISCL normalization preset vs `optimized`: Wilcoxon signed-rank "
                "test of the PSNR difference over every test image of every fold run (two-sided; "
                "p_holm: Holm-adjusted over the table)"
            ),
            name="preset_tests",
        )
    versus = method_tests(result.image_rows)
    if versus:
        report.add_table(
            _round(versus),
            caption=(
                "Every other method vs ISCL `optimized`: Wilcoxon signed-rank test of the PSNR difference "
                "(method − optimized) over every test image of every fold run (two-sided; p_holm: "
                "Holm-adjusted over the table)"
            ),
            name="method_tests",
        )
    checks = claim_checks(result.image_rows)
    if checks:
        report.add_table(
            _round(checks),
            caption=(
                "Seed 002's orderings (BIN / optimized ahead of BN, LN, GN; CaGAN ahead of ISCL; among the "
                "unpaired ISCL ahead of ADN ahead of UIDNet), tested here image by image (Wilcoxon, "
                "two-sided)"
            ),
            name="claims",
        )
    report.add_table(
        result.fold_rows, caption="Per fold and noise type, with fit and predict times (s)", name="folds"
    )
    report.add_table(result.image_rows, caption="Per test image (the paired tests' data)", name="images")
    first = _crop(first, prof.crop)
    report.add_figure(
        noise_figure(
            first,
            charge=em_noise(first, kind="charge", mode=mode, rng=seed),
            film=em_noise(first, kind="film", mode=mode, rng=seed),
        ),
        caption=(
            f"Simulated EM noise ({mode} mode) on a clean slice: charge noise (scan streaks and bands, gain "
            "drift, shot noise"
        )
        + (", charging tails" if mode == "structural" else "")
        + ") and film noise (grain, mottling, stains, folds, scratches, holes)",
        name="em_noise",
    )
    for kind, panels in result.examples.items():
        report.add_figure(
            _panel_figure(panels),
            caption=(
                f"{kind} noise, fold 0, first test slice: each row's output "
                "and its |output − clean| heat-map below it (0 to 0.25) — cf. the paper's Fig. 3"
            ),
            name=f"panels_{kind}",
        )
    curves = _loss_figure(out, [m.name for m in chosen])
    if curves is not None:
        report.add_figure(
            curves,
            caption=(
                "ISCL training losses per normalization preset (fold 0; one row per noise): "
                "D's hinge + boosting loss, G's adversarial + λ·(cycle + bypass) loss, H's loss"
            ),
            name="iscl_losses",
        )
    return report.write(out)


def _headroom_sentence(result: StudyResult) -> str:
    by = {r["method"]: r for r in result.rows}
    parts = []
    for kind in NOISE_TYPES:
        if kind not in result.input_psnr:
            continue
        text = f"{kind}: input {result.input_psnr[kind]:.2f} dB (all slices)"
        ceiling = by.get("wiener", {}).get(f"{kind}_psnr", float("nan"))
        if np.isfinite(ceiling):
            text += f", linear-filter ceiling {ceiling:.2f} dB"
            for name in ("dncnn", "unet"):
                value = by.get(name, {}).get(f"{kind}_psnr", float("nan"))
                if np.isfinite(value):
                    text += f", {LABELS[name]} {value - ceiling:+.2f} dB from it"
        parts.append(text)
    return (
        (
            "Headroom per noise (test-set means unless noted): "
            + "; ".join(parts)
            + ". The ceiling is the least-squares FIR filter (21×101 taps) fitted with the noisy set's pairs:"
            " no linear shift-invariant filter of that support does better on them."
        )
        if parts
        else ""
    )


CLASSICAL = ("gaussian", "median", "nlm", "bm3d-psd")


def _classical_sentence(result: StudyResult) -> str:
    """Colour-noise BM3D beside the Gaussian filter and the linear ceiling; ISCL optimized's gap to the
    best classical row."""
    by = {r["method"]: r for r in result.rows}
    parts = []
    for kind in NOISE_TYPES:
        if kind not in result.input_psnr:
            continue
        value = {
            m: by.get(m, {}).get(f"{kind}_psnr", float("nan"))
            for m in (*CLASSICAL, "wiener", "iscl-optimized")
        }
        if not np.isfinite(value["bm3d-psd"]):
            continue
        text = (
            f"{kind}: colour-noise BM3D {value['bm3d-psd']:.2f} dB, "
            f"Gaussian filter {value['gaussian']:.2f} dB"
            + (f", linear-filter ceiling {value['wiener']:.2f} dB" if np.isfinite(value["wiener"]) else "")
        )
        ran = {m: v for m, v in value.items() if m in CLASSICAL and np.isfinite(v)}
        best = max(ran, key=ran.get)
        if np.isfinite(value["iscl-optimized"]):
            text += (
                f"; ISCL optimized {value['iscl-optimized'] - ran[best]:+.2f} dB from the best classical row"
                f" ({LABELS[best]})"
            )
        parts.append(text)
    return (
        "Classical rows (test-set means): " + "; ".join(parts) + ". The colour-noise BM3D sees no pairs: the "
        "noise's power spectrum is the noisy set's minus the clean set's (pooled autocovariances up to lag "
        "48)."
        if parts
        else ""
    )


def _not_reproduced_rows() -> list[dict]:
    """Table 2's rows that are not run, with the paper's numbers and why."""
    out = []
    for name, (label, kind, reason) in NOT_REPRODUCED.items():
        row = {"type": kind, "method": f"{label} ({reason})"}
        for col, value in zip(COLUMNS, PAPER_TABLE2[name]):
            row[col.replace("_", " ")] = "—"
            row[f"paper {col.replace('_', ' ')}"] = f"{value:.{2 if col.endswith('psnr') else 4}f}"
        row["folds"] = 0
        row["fit (min, all folds)"] = ""
        out.append(row)
    return out


def _profile(profile: str) -> Profile:
    if profile not in PROFILES:
        raise PairlessError(f"unknown profile {profile!r}; use one of {', '.join(PROFILES)}")
    return PROFILES[profile]


def _crop(image: np.ndarray, size: int | None) -> np.ndarray:
    if size is None or min(image.shape) <= size:
        return image
    h, w = image.shape
    return image[(h - size) // 2 : (h + size) // 2, (w - size) // 2 : (w + size) // 2]


def _summary(fold_rows: list[dict], methods: Sequence[Method], noise_types: Sequence[str]) -> list[dict]:
    rows = []
    for m in methods:
        row: dict = {"method": m.name, "label": m.label or m.name, "type": TYPES.get(m.name, "")}
        for kind in NOISE_TYPES:
            for metric in ("psnr", "ssim"):
                values = [r[metric] for r in fold_rows if r["method"] == m.name and r["noise"] == kind]
                row[f"{kind}_{metric}"] = float(np.mean(values)) if values else float("nan")
                row[f"{kind}_{metric}_sd"] = (
                    float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
                )
        for col, value in zip(COLUMNS, PAPER_TABLE2.get(m.name, (float("nan"),) * 4)):
            row[f"paper_{col}"] = value
        row["folds"] = len({r["fold"] for r in fold_rows if r["method"] == m.name})
        row["fit_min"] = round(sum(r["fit_s"] for r in fold_rows if r["method"] == m.name) / 60, 2)
        rows.append(row)
    return rows


def _display_rows(rows: list[dict]) -> list[dict]:
    def cell(mean: float, sd: float, digits: int) -> str:
        if not np.isfinite(mean):
            return "—"
        return f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if np.isfinite(sd) else "")

    out = []
    for r in rows:
        d = {"type": r.get("type", ""), "method": r["label"]}
        for col in COLUMNS:
            digits = 2 if col.endswith("psnr") else 4
            d[col.replace("_", " ")] = cell(r[col], r[f"{col}_sd"], digits)
            d[f"paper {col.replace('_', ' ')}"] = cell(r[f"paper_{col}"], float("nan"), digits)
        d["folds"] = r.get("folds", "")
        d["fit (min, all folds)"] = r.get("fit_min", "")
        out.append(d)
    return out


def _round(rows: list[dict]) -> list[dict]:
    return [{k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in r.items()} for r in rows]


def _ordering_sentence(rows: list[dict]) -> str:
    text = []
    for title, names in (
        ("all rows both tables have", None),
        ("the normalization presets only", [f"iscl-{n}" for n in ISCL_NORMS]),
    ):
        agreement = rank_agreement(rows, names=names)
        if not agreement:
            text.append(
                f"Ordering vs. the paper over {title}: fewer than three such rows were run, so no rank "
                "correlation is reported."
            )
            continue
        parts = []
        for col, s in agreement.items():
            ci = f" [{s['low']:+.2f}, {s['high']:+.2f}]" if np.isfinite(s["low"]) else " (no CI for n < 4)"
            parts.append(f"{col.replace('_', ' ')} ρ = {s['rho']:+.2f}{ci} (n = {s['n']})")
        text.append(
            f"Ordering vs. the paper's Table 2 over {title} (Spearman's ρ with a 95% CI, Fisher z with "
            f"Bonett–Wright's standard error): {'; '.join(parts)}."
        )
    return " ".join(text)


def _panel_figure(panels: dict[str, np.ndarray], *, zoom: int = 160, per_line: int = 6):
    """Each output above its |output − clean| map, ``per_line`` rows of the table per line of panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clean = panels["clean"]
    h, w = clean.shape
    zoom = min(zoom, h, w)
    crop = (slice((h - zoom) // 2, (h + zoom) // 2), slice((w - zoom) // 2, (w + zoom) // 2))
    names = list(panels)
    lines = -(-len(names) // per_line)
    cols = min(per_line, len(names))
    fig, axes = plt.subplots(
        2 * lines, cols, figsize=(1.9 * cols, 4.1 * lines), squeeze=False, constrained_layout=True
    )
    for k, name in enumerate(names):
        top, col = 2 * (k // per_line), k % per_line
        axes[top, col].imshow(panels[name][crop], cmap="gray", vmin=0, vmax=1)
        axes[top, col].set_title(name, fontsize=6)
        if name != "clean":
            axes[top + 1, col].imshow(np.abs(panels[name] - clean)[crop], cmap="inferno", vmin=0, vmax=0.25)
    for ax in axes.flat:
        ax.set_axis_off()
    return fig


def _loss_figure(out: Path, names: Sequence[str]):
    """D / G / H loss curves of fold 0 per ISCL preset and noise, from each model folder's training log."""
    import csv

    presets = [n for n in names if n.startswith("iscl-")]
    logs = {}
    for kind in NOISE_TYPES:
        for name in presets:
            path = Path(out) / "models" / kind / "fold0" / name / "model" / "training" / "training_log.csv"
            if path.is_file():
                with path.open() as fh:
                    logs[(kind, name)] = list(csv.DictReader(fh))
    if not logs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in NOISE_TYPES if any(key[0] == k for key in logs)]
    terms = (("loss_d", "D"), ("loss_g", "G"), ("loss_h", "H"))
    fig, axes = plt.subplots(
        len(kinds), 3, figsize=(12, 3.2 * len(kinds)), squeeze=False, constrained_layout=True
    )
    for r, kind in enumerate(kinds):
        for c, (key, title) in enumerate(terms):
            ax = axes[r, c]
            for name in presets:
                rows = logs.get((kind, name), [])
                points = [
                    (float(row["step"]), float(row[key])) for row in rows if row.get(key) not in (None, "")
                ]
                if points:
                    ax.plot(*zip(*points), label=LABELS.get(name, name).replace("ISCL ", ""))
            ax.set_title(f"{kind}: {title} loss", fontsize=9)
            ax.set_xlabel("step")
            if key == "loss_g":
                ax.set_yscale("log")
    axes[0, 0].legend(fontsize=6)
    return fig


def _fit_identity(data: FoldData, **_) -> Denoiser:
    return Identity()


def _classical(name: str) -> Callable[..., Denoiser]:
    def fit(data: FoldData, **_) -> Denoiser:
        from pairless.methods.classical import make_classical

        return make_classical(name, auto=True)

    return fit


def _fit_wiener(data: FoldData, **_) -> Denoiser:
    from pairless.methods.wiener import fit_linear_filter

    return fit_linear_filter(data.noisy, data.noisy_truth)


# Charge noise has a direction: streaks along the scan (x), so no 90° turns (they make vertical
# streaks that never occur at test time: -0.34 dB for DnCNN).  Flipping left-right keeps the streaks'
# statistics (an AR(1) row read backwards is the same process) but not, in structural mode, the
# charging tails that trail +x: there only up-down flips are allowed.  Film noise is isotropic.
AUGMENT = {("charge", "additive"): "flips", ("charge", "structural"): "updown"}


def _supervised(arch: str) -> Callable[..., Denoiser]:
    def fit(data: FoldData, *, out: Path, profile: str, seed: int, progress: bool) -> Denoiser:
        from pairless import api

        augment = AUGMENT.get((data.noise, data.mode), "dihedral")
        return api.fit(
            "supervised",
            data.noisy,
            clean=data.noisy_truth,
            out=out,
            profile=profile,
            arch=arch,
            augment=augment,
            seed=seed,
            overwrite=True,  # the study's own model folder, trained again on each run
            progress=progress,
        )

    return fit


def _self_supervised(name: str) -> Callable[..., Denoiser]:
    def fit(data: FoldData, *, out: Path, profile: str, seed: int, progress: bool) -> Denoiser:
        from pairless import api

        overrides = {
            # structN2V: the horizontal mask hides the scan line's neighbours, whose noise the streaks
            # correlate
            "structn2v": {"struct_mask": "horizontal"},
            # BSN: EM noise is correlated, not the per-pixel Gaussian the posterior step assumes, and the
            # textured slices have no smooth regions to fit that model on; so the blind-spot mean alone
            "bsn": {"noise": "none"},
        }.get(name, {})
        return api.fit(
            "n2v" if name == "structn2v" else name,
            np.stack(data.noisy),
            axes="SYX",
            out=out,
            profile=profile,
            seed=seed,
            overwrite=True,  # the study's own model folder, trained again on each run
            progress=progress,
            resume=False,
            **overrides,
        )

    return fit


def _iscl_config(profile: str, steps: int | None):
    from pairless.methods.iscl import ISCLConfig

    return ISCLConfig.for_profile(profile, **({} if steps is None else {"steps": steps}))


def _iscl(norm: str, steps: int | None) -> Callable[..., Denoiser]:
    def fit(data: FoldData, *, out: Path, profile: str, seed: int, progress: bool) -> Denoiser:
        from pairless import api

        return api.fit(
            "iscl",
            data.noisy,
            clean=data.clean,
            out=out,
            config=_iscl_config(profile, steps),
            norm=norm,
            seed=seed,
            overwrite=True,  # the study's own model folder, trained again on each run
            progress=progress,
        )

    return fit


def _fit_bm3d_psd(data: FoldData, **_) -> Denoiser:
    """BM3D with the noise's PSD and mean estimated from the noisy set minus the unpaired clean set."""
    from pairless import noise_psd
    from pairless.methods.classical import make_classical

    return make_classical("bm3d", psd=noise_psd.from_sets(data.noisy, data.clean))


def _baseline_config(name: str, profile: str):
    from pairless.methods import registry

    return registry.get(name).configure(profile)


def _baseline(name: str) -> Callable[..., Denoiser]:
    """CaGAN on the noisy set's pairs; ADN and UIDNet on the two sets, unpaired; augmented as the noise
    allows (no 90° turns of charge streaks; an unpaired method flips both ways)."""

    def fit(data: FoldData, *, out: Path, profile: str, seed: int, progress: bool) -> Denoiser:
        from pairless import api

        paired = name == "cagan"
        augmentation = AUGMENT.get((data.noise, data.mode), "dihedral")
        if not paired and augmentation == "updown":
            augmentation = "flips"
        return api.fit(
            name,
            data.noisy,
            clean=data.noisy_truth if paired else data.clean,
            out=out,
            config=_baseline_config(name, profile),
            augmentation=augmentation,
            seed=seed,
            overwrite=True,  # the study's own model folder, trained again on each run
            progress=progress,
        )

    return fit
