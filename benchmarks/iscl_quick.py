"""ISCL's quick profile on the EM study's fold 0 (issue 10): what F(x), x - H(x) and their mix reach.

The data are built as :func:`pairless.experiments.em.run_em_study` builds them for ``--profile
quick`` (read from its ``PROFILES`` at run time: crop, number of folds, noise mode): the ISBI-2012
slices centre-cropped, noise drawn once per slice and noise type with ``default_rng((seed, k, i))``,
folds from ``default_rng(seed).permutation``; fold 0's test slices are held out and the training slices are
split in half into the clean set
and the noisy set (disjoint, unpaired).  Scored on fold 0's test slices (PSNR/SSIM, data range 1):
the noisy input, the Gaussian filter tuned per image by J-invariance (the study's best classical
row at the quick profile), and ISCL's three estimates.  The training log (``training_log.csv`` in
the model folder) has D's loss and the PSNR of each estimate on the noisy set's own pairs over time.

Usage (one core, as the project's CPU measurements are run)::

    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python benchmarks/iscl_quick.py --noise charge \\
        [--norm optimized] [--set steps=2000 --set lr=5e-4] [--dncnn] [--crop 0]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from pairless import api
from pairless.denoiser import denoise_array
from pairless.experiments.em import DEFAULT_CLEAN, PROFILES, _crop
from pairless.methods.classical import make_classical
from pairless.methods.iscl import ISCLConfig
from pairless.methods.iscl.denoiser import from_unit_range, to_unit_range
from pairless.metrics.image import psnr, ssim
from pairless.sim.em import NOISE_TYPES, em_noise
from pairless.sim.em_folder import read_clean_folder

RESULTS = Path(__file__).resolve().parent / "results"


def fold_data(
    kind: str, *, seed: int = 0, fold: int = 0, clean_dir: Path = DEFAULT_CLEAN, crop: int | None = -1
):
    """(noisy set, clean set, noisy set's truths, test noisy, test clean) of one fold, as the study makes
    them; ``crop`` -1 is the profile's crop, None the whole slices."""
    prof = PROFILES["quick"]
    images = [_crop(im, prof.crop if crop == -1 else crop) for _, im in read_clean_folder(clean_dir)]
    k = NOISE_TYPES.index(kind)
    mode = getattr(prof, "noise_mode", "structural")
    noisy = [
        em_noise(im, kind=kind, mode=mode, rng=np.random.default_rng((seed, k, i)))
        for i, im in enumerate(images)
    ]
    order = np.random.default_rng(seed).permutation(len(images))
    test = np.array_split(order, prof.folds)[fold]
    train = [i for i in order if i not in set(test.tolist())]
    clean_idx, noisy_idx = train[: len(train) // 2], train[len(train) // 2 :]
    return (
        [noisy[i] for i in noisy_idx],
        [images[i] for i in clean_idx],
        [images[i] for i in noisy_idx],
        [noisy[i] for i in test],
        [images[i] for i in test],
    )


def _score(outputs, truths) -> dict:
    return {
        "psnr": round(float(np.mean([psnr(o, t, data_range=1.0) for o, t in zip(outputs, truths)])), 3),
        "ssim": round(float(np.mean([ssim(o, t, data_range=1.0) for o, t in zip(outputs, truths)])), 4),
    }


def iscl_estimates(denoiser, images) -> dict[str, list[np.ndarray]]:
    """F(x), x - H(x) and the output for each image, whole, in the clean set's units."""
    out: dict[str, list[np.ndarray]] = {"f": [], "h": [], "mix": []}
    with torch.no_grad():
        for image in images:
            x = to_unit_range(torch.from_numpy(image)[None, None], denoiser.noisy_range)
            for name, est in denoiser.output.estimates(x).items():
                out[name].append(from_unit_range(est, denoiser.clean_range)[0, 0].numpy())
    return out


def _value(text: str):
    """A YAML value, with "1e-3" as a number (YAML 1.1 reads exponents without a dot as strings)."""
    value = yaml.safe_load(text)
    try:
        return float(value) if isinstance(value, str) else value
    except ValueError:
        return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", choices=NOISE_TYPES, default="charge")
    parser.add_argument("--norm", default="optimized")
    parser.add_argument(
        "--set", action="append", default=[], help="ISCLConfig override KEY=VALUE (YAML value)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dncnn", action="store_true", help="also train the paired DnCNN reference (quick)")
    parser.add_argument("--out", type=Path, default=None, help="model folder (default: a temporary one)")
    parser.add_argument(
        "--crop", type=int, default=-1, help="centre crop edge (-1: the profile's; 0: whole slices)"
    )
    args = parser.parse_args()

    overrides = dict(kv.split("=", 1) for kv in args.set)
    config = ISCLConfig.for_profile("quick").model_copy(update={k: _value(v) for k, v in overrides.items()})
    config = type(config).from_dict(config.model_dump())  # validate the overrides
    crop = None if args.crop == 0 else args.crop
    noisy, clean, truth, test_noisy, test_clean = fold_data(args.noise, seed=args.seed, crop=crop)
    rows = {"noisy": _score(test_noisy, test_clean)}
    gaussian = make_classical("gaussian", auto=True)
    rows["gaussian"] = _score([denoise_array(x, gaussian, axes="YX") for x in test_noisy], test_clean)

    out = args.out or Path(tempfile.mkdtemp(prefix="iscl_quick_"))
    t0 = time.perf_counter()
    den = api.fit(
        "iscl",
        noisy,
        clean=clean,
        out=out / "iscl",
        norm=args.norm,
        config=config,
        seed=args.seed,
        progress=False,
        options={"monitor_pairs": (noisy[:2], truth[:2])},
    )
    fit_s = time.perf_counter() - t0
    for name, images in iscl_estimates(den, test_noisy).items():
        rows[f"iscl_{name}"] = _score(images, test_clean)
    rows["iscl"] = _score(
        [denoise_array(x, den, axes="YX") for x in test_noisy], test_clean
    )  # the denoiser path
    # the same on the noisy set F was trained on: a gain far above the test one means F fits those images
    rows["noisy_train"] = _score(noisy, truth)
    rows["iscl_train"] = _score([denoise_array(x, den, axes="YX") for x in noisy], truth)
    if args.dncnn:
        t1 = time.perf_counter()
        ref = api.fit(
            "supervised",
            noisy,
            clean=truth,
            arch="dncnn",
            out=out / "dncnn",
            profile="quick",
            seed=args.seed,
            progress=False,
        )
        rows["dncnn"] = _score([denoise_array(x, ref, axes="YX") for x in test_noisy], test_clean)
        rows["dncnn"]["fit_s"] = round(time.perf_counter() - t1, 1)

    import csv

    with open(out / "iscl" / "training" / "training_log.csv") as f:
        log = list(csv.DictReader(f))
    keys = (
        "step",
        "adversarial_d",
        "boosting",
        "f_residual",
        "h_norm",
        "val_psnr_input",
        "val_psnr_f",
        "val_psnr_h",
        "val_psnr_mix",
    )
    curve = [{k: round(float(r[k]), 3) for k in keys if r.get(k)} for r in log]
    import hashlib

    import pairless.experiments.em as study
    import pairless.sim.em as sim

    versions = {
        m.__name__: hashlib.sha1(Path(m.__file__).read_bytes()).hexdigest()[:10] for m in (sim, study)
    }
    result = {
        "noise": args.noise,
        "norm": args.norm,
        "crop": crop if args.crop != -1 else PROFILES["quick"].crop,
        "study_profile": str(PROFILES["quick"]),
        "sources": versions,
        "overrides": overrides,
        "fit_s": round(fit_s, 1),
        "torch_threads": torch.get_num_threads(),
        "rows": rows,
        "curve": curve,
        "model": str(out),
    }
    for r in curve:
        print(" ".join(f"{k}={v}" for k, v in r.items()))
    for name, r in rows.items():
        print(f"{name:10s} PSNR {r['psnr']:.2f}  SSIM {r['ssim']:.4f}")
    print(f"fit {fit_s:.0f} s")
    RESULTS.mkdir(exist_ok=True)
    tag = "_".join(
        [
            args.noise,
            args.norm,
            *(f"{k}{v}" for k, v in overrides.items()),
            *([f"crop{args.crop}"] if args.crop != -1 else []),
        ]
    ).replace("/", "")
    (RESULTS / f"iscl_quick_{tag}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
