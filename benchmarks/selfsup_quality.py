"""Self-supervised methods against the strongest classical filters, in one run (issue 15's three cases).

Cases (``--case``):

- ``single``: scikit-image's ``camera`` (512², no download) in [0, 1] + N(0, (25/255)²), unclipped,
  ``default_rng(0)``; each method trained on that image alone; time = training + prediction.
- ``bsd68``: trained on the 400 noisy BSD400 crops, scored on all 68 noisy BSD68 images (σ = 25 on
  0-255, unclipped, the N2V paper's setting; noise from ``pairless.experiments.bsd68``).
- ``w2s``: real widefield fluorescence noise, W2S channel 0: trained on the 40 single frames
  (noisy only), scored on the same frames against their 400-frame averages (data range 255).
- ``stack3d``: a synthetic 64×256×256 volume of smooth 3D structures in [0, 1] + N(0, 0.15²): a
  method as ``ne2ne`` trains 2D per slice, as ``ne2ne:3d`` a 3D network (its 3D quick profile).

Classical rows come from the same run: Gaussian noise of known σ gets NL-means tuned by
J-invariance, NL-means and BM3D with the σ known (BM3D needs the ``bm3d`` extra); W2S gets
``benchmarks/classical_baselines.py``'s rows (BM3D and NL-means after a generalized Anscombe
transform with a fitted Poisson-Gaussian model, NL-means by J-invariance, the oracle Gaussian).
PSNR/SSIM by :mod:`pairless.metrics.image` on float outputs, neither clipped nor rounded; means
over images.  The last lines print each learned row's gap to the best classical row and its time.

Usage: ``python benchmarks/selfsup_quality.py --case single --methods bsn,ne2ne [--set bsn.steps=400]``
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pairless import api
from pairless.denoiser import denoise_array
from pairless.methods import registry
from pairless.methods.classical import make_classical
from pairless.metrics.image import psnr, ssim

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"


def _scores(outputs, cleans, data_range) -> dict:
    p = [psnr(o, c, data_range=data_range) for o, c in zip(outputs, cleans)]
    s = [ssim(o, c, data_range=data_range) for o, c in zip(outputs, cleans)]
    return {"psnr": float(np.mean(p)), "ssim": float(np.mean(s)), "psnr_per_image": [round(v, 3) for v in p]}


def learned_rows(
    spec: str, overrides: dict, train, test_noisy, test_clean, *, data_range, seed, axes="YX", tta=False
) -> list[dict]:
    """Train ``spec``'s quick profile (``method`` or ``method:3d``, with ``overrides``) on ``train`` once;
    denoise and score ``test_noisy`` (and again with 8-fold TTA when ``tta``).  Time = training + prediction.
    """
    method, _, variant = spec.partition(":")
    config = registry.get(method).config_class.for_profile(
        "quick", **({"ndim": 3} if variant == "3d" else {}), **overrides
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        api.fit(method, train, axes=axes, out=Path(tmp) / "m", config=config, seed=seed, progress=False)
        fit_s = time.perf_counter() - start
        log = (Path(tmp) / "m" / "training_log.csv").read_text()
        for augment in (False, True) if tta else (False,):
            model = registry.load_model(Path(tmp) / "m", tta=augment)
            start = time.perf_counter()
            outputs = [denoise_array(y, model, axes=axes) for y in test_noisy]
            predict_s = time.perf_counter() - start
            rows.append(
                {
                    "name": spec + (" + tta" if augment else ""),
                    **_scores(outputs, test_clean, data_range),
                    "seconds": fit_s + predict_s,
                    "fit_seconds": fit_s,
                    "predict_seconds": predict_s,
                    "config": config.model_dump(mode="json"),
                    "training_log": log,
                    "learned": True,
                }
            )
    return rows


def gaussian_noise_rows(
    noisy, clean, *, sigma, data_range, axes="YX", bm3d=True, calibrate=True
) -> list[dict]:
    """NL-means (J-invariance, and σ known) and BM3D (σ known) on Gaussian noise of known ``sigma``."""
    baselines = {"nlm (J-invariance)": make_classical("nlm", auto=True)} if calibrate else {}
    baselines["nlm (σ known)"] = make_classical("nlm", sigma=sigma)
    if bm3d and importlib.util.find_spec("bm3d") is not None:
        baselines["bm3d (σ known)"] = make_classical("bm3d", sigma=sigma)
    elif bm3d:
        print("bm3d not installed (pip install 'pairless[bm3d]'): its row is left out")
    rows = [{"name": "input", **_scores(noisy, clean, data_range), "seconds": 0.0}]
    for name, denoiser in baselines.items():
        start = time.perf_counter()
        outputs = [denoise_array(y, denoiser, axes=axes) for y in noisy]
        rows.append(
            {"name": name, **_scores(outputs, clean, data_range), "seconds": time.perf_counter() - start}
        )
    return rows


def case_single():
    from skimage import data

    clean = data.camera().astype(np.float32) / 255
    noisy = (clean + np.random.default_rng(0).normal(0, 25 / 255, clean.shape)).astype(np.float32)
    return (
        [noisy],
        [noisy],
        [clean],
        1.0,
        lambda: gaussian_noise_rows([noisy], [clean], sigma=25 / 255, data_range=1.0),
        "YX",
    )


def case_bsd68():
    from pairless.experiments.bsd68 import SIGMA, add_noise, read_folder

    root = SHARED / "natural"
    train = [
        add_noise(im, rng=np.random.default_rng([0, 0, i]))
        for i, im in enumerate(read_folder(root / "bsd400_train"))
    ]
    clean = read_folder(root / "bsd68")
    noisy = [add_noise(im, rng=np.random.default_rng([0, 1, i])) for i, im in enumerate(clean)]
    return (
        train,
        noisy,
        clean,
        255.0,
        lambda: gaussian_noise_rows(noisy, clean, sigma=SIGMA, data_range=255.0),
        "YX",
    )


def case_w2s():
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from classical_baselines import classical_rows

    from pairless.io import read_image

    folder = SHARED / "fluo" / "w2s_ch0"
    names = sorted(p.name for p in (folder / "avg1_noisy").glob("*.png"))
    noisy = [read_image(folder / "avg1_noisy" / n, axes="YX").data.astype(np.float32) for n in names]
    clean = [read_image(folder / "avg400_gt" / n, axes="YX").data.astype(np.float32) for n in names]

    return noisy, noisy, clean, 255.0, lambda: classical_rows(noisy, clean, data_range=255.0), "YX"


def case_stack3d():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    field = ndimage.gaussian_filter(rng.normal(size=(64, 256, 256)), 4.0)
    clean = (0.5 + 0.5 * np.tanh(field / field.std() * 2)).astype(np.float32)
    noisy = (clean + rng.normal(0, 0.15, clean.shape)).astype(np.float32)
    # NL-means in 3D with σ known (J-invariance over a 4-megavoxel volume took > 10 min); BM3D is 2D only
    return (
        [noisy],
        [noisy],
        [clean],
        1.0,
        lambda: gaussian_noise_rows(
            [noisy], [clean], sigma=0.15, data_range=1.0, axes="ZYX", bm3d=False, calibrate=False
        ),
        "ZYX",
    )


CASES = {"single": case_single, "bsd68": case_bsd68, "w2s": case_w2s, "stack3d": case_stack3d}


def _overrides(settings: list[str]) -> dict[str, dict]:
    """``["bsn.steps=400", "ne2ne.lr=1e-3"]`` -> ``{"bsn": {"steps": 400}, "ne2ne": {"lr": 0.001}}``."""
    out: dict[str, dict] = {}
    for item in settings:
        key, value = item.split("=", 1)
        method, field = key.split(".", 1)
        out.setdefault(method, {})[field] = json.loads(value) if value[:1] in '0123456789-[{tf"n' else value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES), required=True)
    parser.add_argument("--methods", default="bsn,ne2ne", help="comma-separated self-supervised methods")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="METHOD.FIELD=VALUE",
        help="override a quick-profile setting, e.g. bsn.steps=400 (repeatable)",
    )
    parser.add_argument("--tta", action="store_true", help="also score 8-fold test-time augmentation")
    parser.add_argument(
        "--no-baselines", action="store_true", help="skip the classical rows (exploration only)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    train, noisy, clean, data_range, baselines, axes = CASES[args.case]()
    overrides = _overrides(args.set)
    rows = [] if args.no_baselines else baselines()
    for method in [m for m in args.methods.split(",") if m]:
        for row in learned_rows(
            method,
            overrides.get(method, {}),
            train,
            noisy,
            clean,
            data_range=data_range,
            seed=args.seed,
            axes=axes,
            tta=args.tta,
        ):
            rows.append(row)
            print(f"  {row['name']}: {row['psnr']:.2f} dB in {row['seconds']:.0f} s", flush=True)

    print(
        f"\ncase {args.case}: {len(train)} training image(s), {len(noisy)} test image(s), "
        f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'method':<28}{'PSNR dB':>9}{'SSIM':>8}{'seconds':>10}")
    for r in rows:
        print(f"{r['name']:<28}{r['psnr']:>9.2f}{r['ssim']:>8.4f}{r['seconds']:>10.1f}")
    classical = [r for r in rows if not r.get("learned") and r["name"] != "input"]
    if classical:
        best = max(classical, key=lambda r: r["psnr"])
        for r in rows:
            if r.get("learned"):
                print(
                    f"{r['name']}: {r['psnr'] - best['psnr']:+.2f} dB vs the best classical row"
                    f" ({best['name']}, {best['psnr']:.2f} dB),"
                    f" {r['seconds'] / max(best['seconds'], 1e-9):.1f}× its time"
                )
    path = args.json or RESULTS / f"selfsup_{args.case}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "case": args.case,
                "threads": torch.get_num_threads(),
                "load_average": os.getloadavg(),
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
