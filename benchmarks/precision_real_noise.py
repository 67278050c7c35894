"""Training precision on real noise (issue 23): each self-supervised method's ``quick`` profile trained in
fp32 (``precision: 32-true``, NCHW) and in bf16 (``bf16-mixed``, channels-last, as ``auto`` picked it
before issue 23) on real widefield fluorescence frames, beside BM3D + VST in the same run.

**Data.**  W2S channel 0 (``shared/data/fluo/w2s_ch0``, SOURCE.txt: 8-bit single frames ``avg1_noisy``
and their 400-frame averages ``avg400_gt``, FOVs 001-040).  Each model trains on the noisy frames of the
evaluation FOVs only (default 031-040: what a user does, self-supervised training on the images to be
denoised); the clean averages are read for scoring only, never in training.  The subset holds one noisy
frame per FOV, so ``n2n`` (pairs of acquisitions) has no pairs here and is not run.

**Scores.**  PSNR = 10·log10(255² / MSE) by :mod:`pairless.metrics.image` on the float outputs, neither
rounded nor clipped, mean over images of the per-image PSNR (``benchmarks/classical_baselines.py``'s
convention).  The training comparison denoises with fp32 inference (engine ``torch-fp32``) so that the
Δ is the training precision's alone; each model is also run with the default inference (engine
``torch``, precision ``auto``: bf16 on a bf16 CPU) to check the inference rule of issue 23: bf16
inference qualifies when its output agrees with fp32's at ≥ 50 dB (PSNR over the fp32 output's range,
max − min, as :mod:`pairless.inference.engines`'s gate) and moves the denoising PSNR by ≤ 0.1 dB.

**Speed.**  Steps per CPU-second = the profile's steps / the process CPU time of the whole fit (setup,
validation and export included); CPU time rather than wall time because the machine is shared.

The JSON records the CPU's bf16 flags (``avx512_bf16``, ``amx_bf16``, ``amx_tile`` from /proc/cpuinfo):
the issue measured bf16 losing ~0.9 dB on an AMX machine; this benchmark says what happens on the
machine that runs it.

Usage: ``OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/precision_real_noise.py
[--methods n2v,ne2ne,bsn,zsn2n] [--seeds 0,1] [--seeds-for bsn=0] [--fovs 31-40] [--json PATH]
[--resume]``; ``--resume`` keeps what ``--json`` already holds and runs only the missing trainings (so a
long measurement can be split over several invocations, and a table reprinted without training).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pairless import api
from pairless.config import read_yaml
from pairless.inference.engines import cpu_has_bf16
from pairless.io import read_image
from pairless.methods import registry
from pairless.metrics.image import psnr
from pairless.training.selfsup import resolve_precision

W2S = Path(__file__).resolve().parents[2] / "shared" / "data" / "fluo" / "w2s_ch0"
RESULTS = Path(__file__).resolve().parent / "results"
PRECISIONS = ("32-true", "bf16-mixed")
DATA_RANGE = 255.0
FLAGS = ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8")


def cpu_info() -> dict:
    """The CPU model and which bf16-relevant flags /proc/cpuinfo lists (Linux; empty elsewhere)."""
    model, flags = platform.processor(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    return {
        "model": model,
        "flags": {f: f in flags for f in FLAGS},
        "cpu_has_bf16": cpu_has_bf16(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }


def read_fovs(fovs: list[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    def read(kind: str, i: int) -> np.ndarray:
        return read_image(W2S / kind / f"{i:03d}.png", axes="YX").data.astype(np.float32)

    return [read("avg1_noisy", i) for i in fovs], [read("avg400_gt", i) for i in fovs]


def mean_psnr(outputs, cleans) -> tuple[float, list[float]]:
    p = [psnr(o, c, data_range=DATA_RANGE) for o, c in zip(outputs, cleans)]
    return float(np.mean(p)), [round(v, 4) for v in p]


def agreement_db(outputs, references) -> float:
    """The worst image's PSNR of ``outputs`` against ``references`` over each reference's max − min."""
    worst = np.inf
    for o, r in zip(outputs, references):
        mse = float(np.mean((o.astype(np.float64) - r.astype(np.float64)) ** 2))
        span = float(r.max() - r.min())
        worst = min(worst, np.inf if mse == 0 else 10 * np.log10(span**2 / mse))
    return float(worst)


def denoise_all(denoiser, noisy) -> tuple[list[np.ndarray], float]:
    start = time.process_time()
    outputs = [np.asarray(api.denoise(y, denoiser, axes="YX"), dtype=np.float32) for y in noisy]
    return outputs, time.process_time() - start


def bm3d_vst(noisy, clean) -> dict:
    denoiser = api.load("bm3d", vst=True)
    outputs, cpu_s = denoise_all(denoiser, noisy)
    score, per_image = mean_psnr(outputs, clean)
    return {"psnr": score, "psnr_per_image": per_image, "cpu_seconds": cpu_s}


def train_and_score(method: str, precision: str, seed: int, noisy, clean, *, steps: int | None) -> dict:
    """Fit ``method``'s quick profile in ``precision`` on ``noisy``; score it with fp32 and default
    (auto) inference."""
    overrides = {"precision": precision, "channels_last": "auto"}
    if steps is not None:
        overrides["steps"] = steps
    config = registry.get(method).config_class.for_profile("quick", **overrides)
    resolved = resolve_precision(config)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        start, wall = time.process_time(), time.perf_counter()
        api.fit(method, noisy, axes="YX", out=folder, config=config, seed=seed, progress=False)
        fit_cpu, fit_wall = time.process_time() - start, time.perf_counter() - wall
        trained = read_yaml(folder / "config.yaml")
        fp32_out, fp32_cpu = denoise_all(api.load(folder, engine="torch-fp32"), noisy)
        auto_out, auto_cpu = denoise_all(api.load(folder), noisy)
    fp32_psnr, fp32_per_image = mean_psnr(fp32_out, clean)
    auto_psnr, _ = mean_psnr(auto_out, clean)
    return {
        "method": method,
        "precision": precision,
        "resolved": {"precision": resolved[0], "channels_last": resolved[1]},
        "seed": seed,
        "steps": config.steps,
        "best_step": trained.get("best_step"),
        "fit_cpu_seconds": fit_cpu,
        "fit_wall_seconds": fit_wall,
        "steps_per_cpu_second": config.steps / fit_cpu,
        "psnr": fp32_psnr,
        "psnr_per_image": fp32_per_image,
        "inference": {
            "auto_psnr": auto_psnr,
            "auto_minus_fp32_db": auto_psnr - fp32_psnr,
            "auto_vs_fp32_agreement_db": agreement_db(auto_out, fp32_out),
            "fp32_cpu_seconds": fp32_cpu,
            "auto_cpu_seconds": auto_cpu,
        },
    }


def summarise(runs: list[dict], baseline: dict | None) -> dict:
    out = {}
    for method in dict.fromkeys(r["method"] for r in runs):
        row = {}
        for p in PRECISIONS:
            mine = [r for r in runs if r["method"] == method and r["precision"] == p]
            if not mine:
                continue
            scores = [r["psnr"] for r in mine]
            row[p] = {
                "psnr_mean": float(np.mean(scores)),
                "psnr_per_seed": {r["seed"]: r["psnr"] for r in mine},
                "seed_spread_db": float(max(scores) - min(scores)),
                "steps_per_cpu_second": float(np.mean([r["steps_per_cpu_second"] for r in mine])),
                "fit_cpu_seconds": float(np.mean([r["fit_cpu_seconds"] for r in mine])),
            }
        if all(p in row for p in PRECISIONS):
            fp32, bf16 = row["32-true"], row["bf16-mixed"]
            paired = [
                bf16["psnr_per_seed"][s] - fp32["psnr_per_seed"][s]
                for s in fp32["psnr_per_seed"]
                if s in bf16["psnr_per_seed"]
            ]
            row["bf16_minus_fp32_db"] = bf16["psnr_mean"] - fp32["psnr_mean"]
            row["bf16_minus_fp32_per_seed_db"] = paired
            row["bf16_speedup"] = bf16["steps_per_cpu_second"] / fp32["steps_per_cpu_second"]
        if baseline is not None:
            for p in PRECISIONS:
                if p in row:
                    row[p]["minus_bm3d_vst_db"] = row[p]["psnr_mean"] - baseline["psnr"]
                    row[p]["cpu_time_vs_bm3d_vst"] = row[p]["fit_cpu_seconds"] / baseline["cpu_seconds"]
        inference = [r["inference"] for r in runs if r["method"] == method]
        row["inference_auto"] = {
            "worst_agreement_db": min(i["auto_vs_fp32_agreement_db"] for i in inference),
            "largest_abs_psnr_change_db": max(abs(i["auto_minus_fp32_db"]) for i in inference),
        }
        out[method] = row
    return out


def print_table(summary: dict, baseline: dict | None) -> None:
    base = baseline["psnr"] if baseline else float("nan")
    print(f"\nBM3D + VST: {base:.3f} dB" + (f" in {baseline['cpu_seconds']:.0f} CPU-s" if baseline else ""))
    print(
        f"{'method':<8}{'fp32 dB':>9}{'±':>6}{'bf16 dB':>9}{'±':>6}{'Δ dB':>8}{'fp32 st/s':>10}"
        f"{'bf16 st/s':>10}{'fp32-BM3D':>10}{'bf16-BM3D':>10}{'fp32 CPU×BM3D':>14}"
        f"{'inf agree':>10}{'inf Δ':>7}"
    )
    for method, row in summary.items():
        fp32, bf16 = row.get("32-true", {}), row.get("bf16-mixed", {})

        def get(d, k):
            return d.get(k, float("nan"))

        print(
            f"{method:<8}{get(fp32, 'psnr_mean'):>9.3f}{get(fp32, 'seed_spread_db'):>6.2f}"
            f"{get(bf16, 'psnr_mean'):>9.3f}{get(bf16, 'seed_spread_db'):>6.2f}"
            f"{row.get('bf16_minus_fp32_db', float('nan')):>+8.3f}"
            f"{get(fp32, 'steps_per_cpu_second'):>10.2f}{get(bf16, 'steps_per_cpu_second'):>10.2f}"
            f"{get(fp32, 'minus_bm3d_vst_db'):>+10.3f}{get(bf16, 'minus_bm3d_vst_db'):>+10.3f}"
            f"{get(fp32, 'cpu_time_vs_bm3d_vst'):>14.1f}"
            f"{row['inference_auto']['worst_agreement_db']:>10.1f}"
            f"{row['inference_auto']['largest_abs_psnr_change_db']:>7.3f}"
        )
    print(
        "± = spread (max − min) over seeds; Δ = bf16 − fp32 (means over seeds, fp32 inference); st/s = "
        "training steps per CPU-second; inf agree / inf Δ = default (auto) inference against fp32 inference "
        "over this method's models: worst agreement (dB) and largest |Δ denoising PSNR|"
    )


def _fovs(text: str) -> list[int]:
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="n2v,ne2ne,bsn,zsn2n")
    parser.add_argument("--seeds", default="0,1", help="seeds of every method")
    parser.add_argument(
        "--seeds-for",
        action="append",
        default=[],
        metavar="METHOD=S,S",
        help="seeds of one method instead of --seeds, e.g. bsn=0 (repeatable)",
    )
    parser.add_argument("--fovs", default="31-40", help="FOV range trained on and scored (e.g. 31-40)")
    parser.add_argument("--steps", type=int, default=None, help="override the profile's steps (smoke tests)")
    parser.add_argument("--no-baseline", action="store_true", help="skip BM3D + VST")
    parser.add_argument("--json", type=Path, default=RESULTS / "precision_real_noise.json")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the runs (and BM3D row) already in --json and run only the missing ones",
    )
    args = parser.parse_args()

    fovs = _fovs(args.fovs)
    data = f"W2S ch0 avg1_noisy vs avg400_gt, FOVs {fovs[0]:03d}-{fovs[-1]:03d}"
    noisy, clean = read_fovs(fovs)
    info = cpu_info()
    print(
        f"CPU {info['model']}: {info['flags']}, cpu_has_bf16 {info['cpu_has_bf16']},"
        f" threads {info['threads']}"
    )
    path = args.json
    earlier = json.loads(path.read_text()) if args.resume and path.exists() else {}
    if earlier and (earlier.get("data"), earlier.get("steps_override")) != (data, args.steps):
        raise SystemExit(f"{path} holds another run ({earlier.get('data')}); pass another --json")
    input_psnr, _ = mean_psnr(noisy, clean)
    print(f"{data}: noisy input {input_psnr:.3f} dB", flush=True)
    baseline = earlier.get("bm3d_vst")
    if baseline is None and not args.no_baseline:
        baseline = bm3d_vst(noisy, clean)
    if baseline:
        print(f"bm3d + vst: {baseline['psnr']:.3f} dB ({baseline['cpu_seconds']:.0f} CPU-s)", flush=True)

    runs = earlier.get("runs", [])
    invocations = [*earlier.get("invocations", []), {"argv": sys.argv[1:], "load_average": os.getloadavg()}]
    done = {(r["method"], r["precision"], r["seed"]) for r in runs}
    path.parent.mkdir(parents=True, exist_ok=True)

    def write() -> None:
        record = {
            "benchmark": "precision_real_noise",
            "data": data,
            "cpu": info,
            "invocations": invocations,
            "steps_override": args.steps,
            "input_psnr": input_psnr,
            "bm3d_vst": baseline,
            "summary": summarise(runs, baseline),
            "runs": runs,
        }
        path.write_text(json.dumps(record, indent=2))

    seeds = {m: s for m, _, s in (item.partition("=") for item in args.seeds_for)}
    for method in [m for m in args.methods.split(",") if m]:
        for seed in [int(s) for s in seeds.get(method, args.seeds).split(",")]:
            for precision in PRECISIONS:
                if (method, precision, seed) in done:
                    continue
                r = train_and_score(method, precision, seed, noisy, clean, steps=args.steps)
                r["load_average"] = os.getloadavg()
                runs.append(r)
                print(
                    f"  {method} {precision} seed {seed}: {r['psnr']:.3f} dB (auto inference "
                    f"{r['inference']['auto_psnr']:.3f}, agreement "
                    f"{r['inference']['auto_vs_fp32_agreement_db']:.1f}"
                    f" dB), {r['steps_per_cpu_second']:.2f} steps/CPU-s, best step {r['best_step']}",
                    flush=True,
                )
                write()
    write()
    print_table(summarise(runs, baseline), baseline)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
