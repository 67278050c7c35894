"""The prior's routes to real fluorescence noise, the learned VST (Noise2VST) among them, vs BM3D + VST.

Data: W2S channel 0, fields of view 031-040 (``avg1_noisy`` single frames against their ``avg400_gt``
400-frame averages; never trained on, see ``pairless.methods.prior.recipe``).  Rows, each image denoised on
its own by pairless's ``Denoiser`` call shape, none of them seeing the clean image:

- ``input``: the noisy frame;
- ``bm3d + vst`` (the baseline): ``pairless.api.load("bm3d", vst=True)``: Poisson-Gaussian fit, GAT,
  BM3D at σ = 1, closed-form unbiased inverse;
- ``prior gat``: ``PriorDenoiser(vst="gat")``, the same fit and transform with the prior at σ = 1;
- ``prior learned (default)``: ``PriorDenoiser(vst="learned")``, the spline of ``pairless.methods.prior.vst``
  in its default settings (``vst.DEFAULT``);
- ``prior learned (official)``: the paper's settings (``vst.OFFICIAL``: 2000 iterations, fp32, 64² patches);
- ``prior learned (σ_t 15/255)``: the default with the prior told σ = 15/255 instead of 25/255;
- ``prior σ map``: ``PriorDenoiser(vst="none")``, the fitted model as a σ map.

Conventions as ``benchmarks/classical_baselines.py`` (and the W2S rows of ``prior_architecture.py``):
PSNR = 10·log10(255² / MSE) with data range 255 (8-bit frames), SSIM by :mod:`pairless.metrics.image`,
on float outputs neither rounded nor clipped; means over images of per-image scores; seconds are wall time
per image, fit included.  Run it on one core (``OMP_NUM_THREADS=1 taskset -c 1``); the table ends with each
row's PSNR gap (dB) and time ratio against the baseline.

Usage: ``python benchmarks/prior_vst.py [--model FOLDER] [--fovs 31-40] [--rows a,b] [--json PATH]``
(``--model``: a ``pairless pretrain`` model folder; default the shipped prior).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from pairless import api
from pairless.denoiser import denoise_array
from pairless.io import read_image
from pairless.methods.prior import CalibratedPrior, PriorDenoiser, shipped_net
from pairless.methods.prior import vst as learned_vst
from pairless.metrics.image import psnr, ssim

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fluo" / "w2s_ch0"
DATA_RANGE = 255.0
BASELINE = "bm3d + vst"
OPTIONS = dict(tile=512, overlap=32, tta=False, seed=0)


def load_net(model: Path | None):
    """The prior network of a model folder (default: the shipped one) and its weights' SHA-256."""
    from pairless.methods.prior.recipe import build
    from pairless.methods.prior.shipped import FOLDER
    from pairless.training.modelio import WEIGHTS_FILE, read_model_folder

    if model is None:
        net, folder = shipped_net(), FOLDER
    else:
        config, weights = read_model_folder(model, methods=("prior",))
        _, net = build(config)
        net.load_state_dict(weights)
        net, folder = net.eval(), Path(model)
    return net, hashlib.sha256((folder / WEIGHTS_FILE).read_bytes()).hexdigest()


def _prior(net, **options):
    denoiser = PriorDenoiser(CalibratedPrior(net), **options, **OPTIONS)
    return lambda y: denoiser(torch.from_numpy(y)[None, None])[0, 0].numpy()


def _learned(net, settings):
    def run(y):
        x = torch.from_numpy(y)[None, None]
        return learned_vst.denoise_learned(x, net, settings, **OPTIONS)[0, 0].numpy()

    return run


def rows(net) -> dict:
    """name -> (the denoising function of one float32 image, a description of its settings)."""
    bm3d = api.load("bm3d", vst=True)
    default, official = learned_vst.DEFAULT, learned_vst.OFFICIAL
    low_sigma = dataclasses.replace(default, sigma=15 / 255)
    return {
        "input": (lambda y: y, "the noisy frame"),
        BASELINE: (lambda y: denoise_array(y, bm3d, axes="YX"), "api.load('bm3d', vst=True)"),
        "prior gat": (_prior(net, vst="gat"), "PriorDenoiser(vst='gat')"),
        "prior learned (default)": (_prior(net, vst="learned"), dataclasses.asdict(default)),
        "prior learned (official)": (_learned(net, official), dataclasses.asdict(official)),
        "prior learned (σ_t 15/255)": (_learned(net, low_sigma), dataclasses.asdict(low_sigma)),
        "prior σ map": (_prior(net, vst="none"), "PriorDenoiser(vst='none')"),
    }


def _fovs(spec: str) -> list[int]:
    first, _, last = spec.partition("-")
    return list(range(int(first), int(last or first) + 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=Path, default=None, help="a prior model folder (default: the shipped)"
    )
    parser.add_argument("--fovs", default="31-40", help="W2S fields of view, FIRST-LAST (default 31-40)")
    parser.add_argument("--rows", default=None, help="comma-separated row names (default: all)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    net, digest = load_net(args.model)
    table = rows(net)
    names = list(table) if args.rows is None else [n.strip() for n in args.rows.split(",")]
    unknown = [n for n in names if n not in table]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {list(table)}")
    fovs = _fovs(args.fovs)
    noisy = [
        read_image(args.data / "avg1_noisy" / f"{i:03d}.png", axes="YX").data.astype(np.float32) for i in fovs
    ]
    clean = [
        read_image(args.data / "avg400_gt" / f"{i:03d}.png", axes="YX").data.astype(np.float32) for i in fovs
    ]

    results = []
    for name in names:
        run, settings = table[name]
        scores, structural, seconds = [], [], []
        for fov, y, g in zip(fovs, noisy, clean):
            start = time.perf_counter()
            out = np.asarray(run(y), dtype=np.float32)
            seconds.append(time.perf_counter() - start)
            scores.append(psnr(out, g, data_range=DATA_RANGE))
            structural.append(ssim(out, g, data_range=DATA_RANGE))
            print(f"  {name} FOV {fov:03d}: {scores[-1]:.3f} dB in {seconds[-1]:.1f} s", flush=True)
        results.append(
            {
                "name": name,
                "settings": settings,
                "psnr": float(np.mean(scores)),
                "ssim": float(np.mean(structural)),
                "seconds_per_image": float(np.mean(seconds)),
                "psnr_per_image": [round(float(s), 3) for s in scores],
                "seconds_per_image_each": [round(s, 2) for s in seconds],
            }
        )
        print(
            f"{name}: {results[-1]['psnr']:.3f} dB, {results[-1]['seconds_per_image']:.1f} s/image",
            flush=True,
        )

    base = next((r for r in results if r["name"] == BASELINE), None)
    print(f"\n{'row':<30}{'PSNR':>8}{'SSIM':>8}{'s/image':>9}{'ΔdB vs base':>13}{'time ×base':>12}")
    for r in results:
        gap = f"{r['psnr'] - base['psnr']:+.3f}" if base else "-"
        ratio = f"{r['seconds_per_image'] / base['seconds_per_image']:.1f}" if base else "-"
        print(
            f"{r['name']:<30}{r['psnr']:>8.3f}{r['ssim']:>8.4f}{r['seconds_per_image']:>9.1f}{gap:>13}{ratio:>12}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "benchmark": "benchmarks/prior_vst.py",
            "data": f"W2S ch0 FOVs {fovs[0]:03d}-{fovs[-1]:03d}, avg1_noisy vs avg400_gt, data range 255",
            "model": str(args.model or "shipped"),
            "weights_sha256": digest,
            "baseline": BASELINE,
            "threads": torch.get_num_threads(),
            "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "machine": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "rows": results,
        }
        args.json.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
