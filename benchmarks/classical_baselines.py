"""The strongest classical baselines on a set of noisy/clean pairs, for benchmarks to print beside
their own rows (issue 15: "classical baselines must be their strongest, so our wins are honest").

Rows, each run per image through pairless's ``Denoiser`` call shape, none of them using the clean
image except the oracle:

- ``input``: the noisy image itself.
- ``bm3d + vst``: Poisson–Gaussian model fitted per image, generalized Anscombe transform, BM3D with
  σ = 1, closed-form unbiased inverse (``make_classical("bm3d", vst=True)``; needs the bm3d extra,
  left out with a message otherwise).
- ``nlm + vst``: the same with NL-means (h = 0.8·σ, σ = 1); ``nlm + vst (J-invariance)`` tunes h in
  the stabilised domain by J-invariance instead.
- ``nlm (J-invariance)``: NL-means on the raw image with h tuned by J-invariance (``auto=True``).
- ``gaussian (oracle σ)``: the Gaussian filter with, per image, the σ of ``ORACLE_SIGMAS`` that
  scores best against the clean image: an upper bound for a Gaussian filter, not a method a user has.

**Conventions** (the W2S benchmark uses the same): PSNR = 10·log10(data_range² / MSE) and SSIM by
:mod:`pairless.metrics.image` (scikit-image's 7×7 uniform window), both with the given
``data_range`` (255 for the 8-bit W2S images: their SOURCE.txt gives uint8 images rescaled to 0-255
by the data set's distributors), on the float32 outputs as they come, neither rounded nor clipped;
the mean over images of the per-image PSNR (not the PSNR of the pooled MSE).  Seconds are wall time
on this machine for the whole set.

Usage: ``python benchmarks/classical_baselines.py [--data DIR] [--limit N] [--json PATH]`` runs it on
the 40 W2S channel-0 frames (``avg1_noisy`` against ``avg400_gt``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pairless.denoiser import denoise_array
from pairless.methods.classical import make_classical
from pairless.metrics.image import psnr, ssim

ORACLE_SIGMAS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0)
W2S = Path(__file__).resolve().parents[2] / "shared" / "data" / "fluo" / "w2s_ch0"
ROWS = (
    "input",
    "bm3d + vst",
    "nlm + vst",
    "nlm + vst (J-invariance)",
    "nlm (J-invariance)",
    "gaussian (oracle σ)",
)


def classical_rows(
    noisy_list: Sequence[np.ndarray],
    clean_list: Sequence[np.ndarray],
    *,
    data_range: float,
    rows: Sequence[str] = ROWS,
    progress: bool = False,
) -> list[dict]:
    """Score the classical baselines on 2D noisy/clean pairs.

    Returns one dict per row: ``name``, ``psnr`` and ``ssim`` (means over images), ``seconds`` (wall
    time for all images), ``psnr_per_image``, and for the VST rows the fitted ``a``/``b`` per image,
    for the oracle the chosen σ per image.
    """
    if len(noisy_list) != len(clean_list) or not noisy_list:
        raise ValueError("pass as many clean images as noisy ones, at least one")
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise ValueError(f"unknown rows {unknown}; choose from {ROWS}")
    noisy_list = [np.asarray(n, dtype=np.float32) for n in noisy_list]
    clean_list = [np.asarray(c, dtype=np.float32) for c in clean_list]
    if "bm3d + vst" in rows and importlib.util.find_spec("bm3d") is None:
        print("bm3d is not installed (pip install 'pairless[bm3d]'): the bm3d + vst row is left out")
        rows = [r for r in rows if r != "bm3d + vst"]
    denoisers = {
        "bm3d + vst": lambda: make_classical("bm3d", vst=True),
        "nlm + vst": lambda: make_classical("nlm", vst=True),
        "nlm + vst (J-invariance)": lambda: make_classical("nlm", vst=True, auto=True),
        "nlm (J-invariance)": lambda: make_classical("nlm", auto=True),
    }
    out = []
    for name in rows:
        start = time.perf_counter()
        scores, extra = [], {}
        for i, (noisy, clean) in enumerate(zip(noisy_list, clean_list)):
            if name == "input":
                result = noisy
            elif name == "gaussian (oracle σ)":
                result, sigma = _oracle_gaussian(noisy, clean, data_range)
                extra.setdefault("sigma", []).append(sigma)
            else:
                denoiser = denoisers[name]()
                result = denoise_array(noisy, denoiser, axes="YX")
                if denoiser.vst:
                    (model,) = denoiser.noise_models
                    extra.setdefault("a", []).append(model.a)
                    extra.setdefault("b", []).append(model.b)
                if denoiser.auto:
                    extra.setdefault("chosen", []).append(
                        {k: float(v) for k, v in denoiser.chosen[0].items()}
                    )
            scores.append(
                (psnr(result, clean, data_range=data_range), ssim(result, clean, data_range=data_range))
            )
            if progress:
                print(f"  {name}: image {i + 1}/{len(noisy_list)} {scores[-1][0]:.2f} dB", flush=True)
        seconds = time.perf_counter() - start
        p, s = np.array(scores).T
        out.append(
            {
                "name": name,
                "psnr": float(p.mean()),
                "ssim": float(s.mean()),
                "seconds": seconds,
                "psnr_per_image": p.tolist(),
                **extra,
            }
        )
    return out


def _oracle_gaussian(noisy: np.ndarray, clean: np.ndarray, data_range: float) -> tuple[np.ndarray, float]:
    best = None
    for sigma in ORACLE_SIGMAS:
        result = denoise_array(noisy, make_classical("gaussian", sigma=sigma), axes="YX")
        score = psnr(result, clean, data_range=data_range)
        if best is None or score > best[0]:
            best = (score, result, sigma)
    return best[1], best[2]


def load_w2s(
    folder: Path = W2S, limit: int | None = None
) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """The W2S channel-0 frames: single-frame ``avg1_noisy/NNN.png`` and 400-frame ``avg400_gt/NNN.png``."""
    from pairless.io import read_image

    names = sorted(p.name for p in (folder / "avg1_noisy").glob("*.png"))[:limit]
    if not names:
        raise SystemExit(f"no W2S frames found under {folder}/avg1_noisy")
    noisy = [read_image(folder / "avg1_noisy" / n).data for n in names]
    clean = [read_image(folder / "avg400_gt" / n).data for n in names]
    return noisy, clean, names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=W2S, help="folder with avg1_noisy/ and avg400_gt/")
    parser.add_argument("--limit", type=int, default=None, help="only the first N frames")
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated rows to run")
    parser.add_argument(
        "--json", type=Path, default=Path(__file__).parent / "results" / "classical_baselines_w2s.json"
    )
    args = parser.parse_args()

    noisy, clean, names = load_w2s(args.data, args.limit)
    rows = classical_rows(
        noisy, clean, data_range=255.0, rows=[r.strip() for r in args.rows.split(",")], progress=True
    )
    print(f"W2S ch0, {len(names)} frames, data range 255, {torch.get_num_threads()} threads")
    print(f"{'method':<28}{'PSNR dB':>9}{'SSIM':>8}{'seconds':>9}")
    for r in rows:
        print(f"{r['name']:<28}{r['psnr']:>9.2f}{r['ssim']:>8.4f}{r['seconds']:>9.1f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "data": str(args.data),
        "images": names,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "conventions": {
            "data_range": 255.0,
            "psnr": "mean over images of 10·log10(255²/MSE), float32 outputs unclipped",
            "ssim": "pairless.metrics.image.ssim (skimage 7×7 uniform window), data_range 255",
        },
        "rows": rows,
    }
    args.json.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
