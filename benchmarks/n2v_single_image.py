"""Single-image Noise2Void: PSNR and wall time on one 512² image, trained on that image alone (SPEC §7).

The image is scikit-image's ``camera`` (shipped with it, no download) in [0, 1] plus Gaussian noise
σ = 25/255, unclipped, from ``default_rng(0)`` — the setting of the anchors in notes/speed.md.  In
the same run, for the ratios: the classical filters a user would otherwise reach for, through the
same ``Denoiser`` call shape (Gaussian and NL-means tuned by J-invariance with ``auto=True``, i.e.
without the clean image; NL-means also with the known noise σ; BM3D when the ``bm3d`` extra is
installed).  Noise2Void is ``fit_n2v`` with the quick profile's settings and a step budget
(``--steps``), predicted with and without 8-fold test-time augmentation; the reported time is
training plus prediction.

Usage: ``python benchmarks/n2v_single_image.py [--steps 600] [--n2v2] [--json PATH]``
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from pairless.config import N2VConfig
from pairless.denoiser import denoise_array
from pairless.methods.classical import make_classical
from pairless.methods.n2v import fit_n2v
from pairless.modelio import load_denoiser

SIGMA = 25 / 255


def _score(clean: np.ndarray, image: np.ndarray) -> dict:
    return {
        "psnr_db": float(peak_signal_noise_ratio(clean, image, data_range=1.0)),
        "ssim": float(structural_similarity(clean, image, data_range=1.0)),
    }


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600, help="N2V training steps (batch 16 of 64²)")
    parser.add_argument("--n2v2", action="store_true", help="N2V2 instead of N2V")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "n2v_single_image.json")
    args = parser.parse_args()

    clean = data.camera().astype(np.float32) / 255
    noisy = (clean + np.random.default_rng(0).normal(0, SIGMA, clean.shape)).astype(np.float32)
    rows = {"noisy": {**_score(clean, noisy), "seconds": 0.0}}

    baselines = {
        "gaussian (auto)": make_classical("gaussian", auto=True),
        "nlm (auto)": make_classical("nlm", auto=True),
        "nlm (known σ)": make_classical("nlm", sigma=SIGMA),
    }
    try:
        import bm3d  # noqa: F401

        baselines["bm3d (known σ)"] = make_classical("bm3d", sigma=SIGMA)
    except ImportError:
        print("bm3d not installed (pip install 'pairless[bm3d]'): its row is left out")
    for name, denoiser in baselines.items():
        out, seconds = _timed(lambda: denoise_array(noisy, denoiser, axes="YX", sigma=None))
        rows[name] = {**_score(clean, out), "seconds": seconds}

    config = N2VConfig.for_profile("quick", steps=args.steps, val_every=max(args.steps // 6, 1), n2v2=args.n2v2)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        _, fit_seconds = _timed(
            lambda: fit_n2v([noisy], axes="YX", out=model_dir, config=config, seed=args.seed, progress=False)
        )
        for tta in (False, True):
            model = load_denoiser(model_dir, tta=tta)
            out, predict_seconds = _timed(lambda: denoise_array(noisy, model, axes="YX"))
            name = "n2v2" if args.n2v2 else "n2v"
            rows[f"{name}{' + tta' if tta else ''}"] = {
                **_score(clean, out),
                "seconds": fit_seconds + predict_seconds,
                "fit_seconds": fit_seconds,
                "predict_seconds": predict_seconds,
            }

    best_classical = max((r["psnr_db"], k) for k, r in rows.items() if k != "noisy" and not k.startswith("n2v"))
    print(f"camera 512², σ = 25/255, {torch.get_num_threads()} threads, N2V {args.steps} steps of 16×64²")
    print(f"{'method':<18}{'PSNR dB':>9}{'SSIM':>8}{'seconds':>9}")
    for name, r in rows.items():
        print(f"{name:<18}{r['psnr_db']:>9.2f}{r['ssim']:>8.4f}{r['seconds']:>9.1f}")
    for name, r in rows.items():
        if name.startswith("n2v"):
            print(
                f"{name}: {r['psnr_db'] - best_classical[0]:+.2f} dB vs the best classical row ({best_classical[1]}), "
                f"{r['seconds'] / rows[best_classical[1]]['seconds']:.0f}× its time; "
                f"SPEC §7 target ≥ 29.1 dB in ≤ 60 s: {'met' if r['psnr_db'] >= 29.1 and r['seconds'] <= 60 else 'not met'}"
            )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    report = {"steps": args.steps, "n2v2": args.n2v2, "threads": torch.get_num_threads(),
              "load_average": os.getloadavg(), "rows": rows}
    args.json.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
