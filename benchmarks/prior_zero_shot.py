"""The shipped prior, zero-shot, against BM3D on the data it never saw (issue 23's "numbers to reach").

Sets (none read by the prior's training: ``methods/prior/recipe.py`` reads BSD400, W2S FOVs 1-30 and ISBI):

- **BSD68** (``natural/bsd68``, all 68 or ``--images N`` evenly spaced), Gaussian noise σ = 15, 25, 50
  (``--sigmas``) on the 0-255 scale, unclipped, drawn per image from ``(seed, image index)`` as
  ``pairless reproduce bsd68`` does (one standard normal draw per image, scaled by σ).  Rows: BM3D with
  σ known (the strongest classical baseline for Gaussian noise), the prior with σ *estimated* per image
  (``pairless denoise prior``'s default) and with σ given.
- **camera** (scikit-image, 512²), σ = 25: the one-image case, with seconds.
- **W2S** channel 0, FOVs 031-040 (``avg1_noisy`` single frames against the ``avg400_gt`` averages):
  BM3D + VST (Poisson-Gaussian fit per image, GAT, BM3D σ = 1, unbiased inverse) against the prior
  through the same fitted GAT (default), through a σ map (``--vst none``) and through a VST learned on each
  image (``--vst learned``, Noise2VST; with its CPU seconds).
- **speed**: zero-shot seconds for 512² and 2048² with the torch engine at fp32 and at ``auto`` precision,
  and the bf16 output's PSNR against fp32's (the engine rule: ≥ 50 dB and ≤ 0.1 dB of denoising PSNR).

PSNR: data range 255 on float outputs, neither clipped nor rounded; means of per-image PSNR.  BM3D is
deterministic, so ``--bm3d-cache`` may keep its rows (keyed by set, image, σ and seed) between runs of the
same noisy images; the JSON says which rows came from it.  Prints each row's gain over the baseline and
writes a JSON (``--json``).

Usage: ``OMP_NUM_THREADS=2 python benchmarks/prior_zero_shot.py [--model FOLDER] [--images N] [--json P]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from pairless import api
from pairless.metrics.image import psnr

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SIGMAS = (15.0, 25.0, 50.0)
RANGE = 255.0


def cpu_flags() -> dict:
    flags = set()
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    return {f: f in flags for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile")}


def _psnr(clean: np.ndarray, out: np.ndarray) -> float:
    return float(psnr(clean, out, data_range=RANGE))


class Cache:
    """BM3D rows kept between runs (BM3D is deterministic on the same noisy image)."""

    def __init__(self, path: Path | None):
        self.path = path
        self.rows = json.loads(path.read_text()) if path is not None and path.is_file() else {}
        self.hits = 0

    def get(self, key: str, compute) -> float:
        if key in self.rows:
            self.hits += 1
            return self.rows[key]
        value = compute()
        self.rows[key] = value
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.rows, indent=1))
        return value


def _prior(model: str | None, **options):
    return api.load(model or "prior", **options)


def bsd68(model, *, images: int | None, sigmas: tuple[float, ...], seed: int, cache: Cache) -> dict:
    from pairless.experiments.bsd68 import read_folder

    clean_all = read_folder(DATA / "natural" / "bsd68")
    picks = (
        np.linspace(0, len(clean_all) - 1, images).round().astype(int) if images else range(len(clean_all))
    )
    rows: dict = {}
    estimated = _prior(model)
    for sigma in sigmas:
        given = _prior(model, sigma=sigma)
        scores = {"input": [], "bm3d (σ known)": [], "prior (σ estimated)": [], "prior (σ given)": []}
        sigma_error, seconds = [], {"bm3d (σ known)": 0.0, "prior (σ estimated)": 0.0}
        for i in picks:
            x = clean_all[i]
            y = (x + sigma * np.random.default_rng([seed, int(i)]).standard_normal(x.shape)).astype(
                np.float32
            )
            scores["input"].append(_psnr(x, y))

            def run_bm3d(y=y, x=x, sigma=sigma):
                t = time.perf_counter()
                out = api.denoise(y, api.load("bm3d", sigma=sigma), axes="YX")
                seconds["bm3d (σ known)"] += time.perf_counter() - t
                return _psnr(x, out)

            scores["bm3d (σ known)"].append(cache.get(f"bsd68/{i}/{sigma}/{seed}", run_bm3d))
            t = time.perf_counter()
            out = api.denoise(y, estimated, axes="YX")
            seconds["prior (σ estimated)"] += time.perf_counter() - t
            scores["prior (σ estimated)"].append(_psnr(x, out))
            sigma_error.append(np.sqrt(estimated.noise_models[0].b) / sigma - 1)
            scores["prior (σ given)"].append(_psnr(x, api.denoise(y, given, axes="YX")))
        rows[f"σ={sigma:g}"] = {
            "images": len(picks),
            "psnr": {k: float(np.mean(v)) for k, v in scores.items()},
            "gain over bm3d": float(
                np.mean(scores["prior (σ estimated)"]) - np.mean(scores["bm3d (σ known)"])
            ),
            "σ estimate relative error (mean, max |.|)": [
                float(np.mean(sigma_error)),
                float(np.max(np.abs(sigma_error))),
            ],
            "seconds (uncached)": seconds,
        }
        print(
            f"BSD68 σ={sigma:g}: "
            + "  ".join(f"{k} {np.mean(v):.2f}" for k, v in scores.items())
            + f"  gain over BM3D {rows[f'σ={sigma:g}']['gain over bm3d']:+.2f} dB",
            flush=True,
        )
    return rows


def camera(model, *, seed: int, cache: Cache) -> dict:
    from skimage import data

    x = data.camera().astype(np.float32)
    y = (x + 25.0 * np.random.default_rng([seed, 512]).standard_normal(x.shape)).astype(np.float32)
    row = {"input": _psnr(x, y)}
    bm3d_seconds = []

    def run_bm3d():
        t = time.perf_counter()
        out = api.denoise(y, api.load("bm3d", sigma=25.0), axes="YX")
        bm3d_seconds.append(time.perf_counter() - t)
        return _psnr(x, out)

    row["bm3d (σ known)"] = cache.get(f"camera/25/{seed}", run_bm3d)
    prior = _prior(model)
    api.denoise(y[:64, :64], prior, axes="YX")  # warm-up: first-call costs are not the method's
    t = time.perf_counter()
    row["prior (σ estimated)"] = _psnr(x, api.denoise(y, prior, axes="YX"))
    row["prior seconds"] = time.perf_counter() - t
    row["bm3d seconds (uncached)"] = bm3d_seconds[0] if bm3d_seconds else None
    row["gain over bm3d"] = row["prior (σ estimated)"] - row["bm3d (σ known)"]
    print(
        f"camera σ=25: BM3D {row['bm3d (σ known)']:.2f}  prior {row['prior (σ estimated)']:.2f} "
        f"({row['prior seconds']:.2f} s)  gain {row['gain over bm3d']:+.2f} dB",
        flush=True,
    )
    return row


def w2s(model, *, cache: Cache) -> dict:
    from pairless.io import read_image

    folder = DATA / "fluo" / "w2s_ch0"
    scores = {
        "input": [],
        "bm3d + vst": [],
        "prior (gat)": [],
        "prior (σ map)": [],
        "prior (learned vst)": [],
    }
    gat, sigma_map, learned = (
        _prior(model, vst="gat"),
        _prior(model, vst="none"),
        _prior(model, vst="learned"),
    )
    seconds = 0.0
    for fov in range(31, 41):
        y = read_image(folder / "avg1_noisy" / f"{fov:03d}.png", axes="YX").data.astype(np.float32)
        x = read_image(folder / "avg400_gt" / f"{fov:03d}.png", axes="YX").data.astype(np.float32)
        scores["input"].append(_psnr(x, y))
        scores["bm3d + vst"].append(
            cache.get(
                f"w2s/{fov}", lambda y=y, x=x: _psnr(x, api.denoise(y, api.load("bm3d", vst=True), axes="YX"))
            )
        )
        scores["prior (gat)"].append(_psnr(x, api.denoise(y, gat, axes="YX")))
        scores["prior (σ map)"].append(_psnr(x, api.denoise(y, sigma_map, axes="YX")))
        t = time.process_time()
        scores["prior (learned vst)"].append(_psnr(x, api.denoise(y, learned, axes="YX")))
        seconds += time.process_time() - t
    row = {k: float(np.mean(v)) for k, v in scores.items()}
    row["gain over bm3d + vst"] = row["prior (gat)"] - row["bm3d + vst"]
    row["gain over bm3d + vst (learned vst)"] = row["prior (learned vst)"] - row["bm3d + vst"]
    row["learned vst CPU seconds per image"] = seconds / len(scores["input"])
    print("W2S FOVs 31-40: " + "  ".join(f"{k} {v:.2f}" for k, v in row.items()), flush=True)
    return row


def speed(model) -> dict:
    rng = np.random.default_rng(0)
    rows = {}
    for side in (512, 2048):
        y = (128 + 25 * rng.standard_normal((side, side))).astype(np.float32)
        outs = {}
        for precision in ("32", "auto"):
            prior = _prior(model, sigma=25.0)
            prior.precision = precision
            api.denoise(y[:64, :64], prior, axes="YX")  # warm-up
            t = time.perf_counter()
            outs[precision] = api.denoise(y, prior, axes="YX")
            rows[f"{side}² {precision} seconds"] = time.perf_counter() - t
        rows[f"{side}² auto vs fp32 PSNR"] = _psnr(outs["32"], outs["auto"])
        print(
            f"{side}²: fp32 {rows[f'{side}² 32 seconds']:.2f} s, auto {rows[f'{side}² auto seconds']:.2f} s, "
            f"auto vs fp32 {rows[f'{side}² auto vs fp32 PSNR']:.1f} dB",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a prior model folder (default: the shipped prior)")
    parser.add_argument("--images", type=int, help="BSD68 images, evenly spaced (default all 68)")
    parser.add_argument("--sigmas", default=",".join(f"{s:g}" for s in SIGMAS), help="BSD68 noise levels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parts", default="bsd68,camera,w2s,speed")
    parser.add_argument("--bm3d-cache", type=Path)
    parser.add_argument(
        "--json", type=Path, default=Path(__file__).parent / "results" / "prior_zero_shot.json"
    )
    args = parser.parse_args()
    cache = Cache(args.bm3d_cache)
    parts = args.parts.split(",")
    report = {
        "command": "python benchmarks/prior_zero_shot.py " + " ".join(os.sys.argv[1:]),
        "model": args.model or "shipped",
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            **cpu_flags(),
        },
    }
    if "bsd68" in parts:
        report["bsd68"] = bsd68(
            args.model,
            images=args.images,
            sigmas=tuple(float(s) for s in args.sigmas.split(",")),
            seed=args.seed,
            cache=cache,
        )
    if "camera" in parts:
        report["camera"] = camera(args.model, seed=args.seed, cache=cache)
    if "w2s" in parts:
        report["w2s"] = w2s(args.model, cache=cache)
    if "speed" in parts:
        report["speed"] = speed(args.model)
    report["bm3d rows from the cache"] = cache.hits
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
