"""PET study speed: simulation + OSEM of one study, and ``pairless demo`` end to end, with the share per
stage.

The baseline, measured in the same run so the ratio survives a busy machine, is the same ordinary-
Poisson OSEM (3 iterations × 21 subsets, 168 views, same data) with scikit-image's ``radon`` as the
projector and ``iradon(filter_name=None)`` (rescaled) as its adjoint, one slice at a time — the
"scikit-image radon" anchor of SPEC §7.  It runs on ``--baseline-slices`` planes and is scaled per plane.

Usage: ``python benchmarks/pet_speed.py [--slices 61] [--baseline-slices 2] [--skip-demo] [--json PATH]``
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from pairless.io.files import atomic_path
from pairless.sim.pet import PetSimConfig, acquire, osem, projector, simulate_pet


def skimage_osem(counts, sensitivity, additive, *, views: int, subsets: int, iterations: int) -> np.ndarray:
    """OSEM of one plane with scikit-image's radon / iradon as projector and adjoint (the baseline)."""
    from skimage.transform import iradon, radon

    n = counts.shape[1]
    theta = np.arange(views) * 180.0 / views
    c = np.arange(n) - (n - 1) / 2
    x = (np.hypot(*np.meshgrid(c, c, indexing="ij")) < n / 2 - 1).astype(float)  # radon's circle
    groups = [np.arange(s, views, subsets) for s in range(subsets)]

    def back(sino, ids):  # iradon without filter is π/(2·n_views) × the adjoint of radon
        return (
            iradon(sino.T, theta=theta[ids], filter_name=None, circle=True, output_size=n)
            * 2
            * len(ids)
            / np.pi
        )

    norms = [back(sensitivity[ids], ids) for ids in groups]
    for _ in range(iterations):
        for ids, norm in zip(groups, norms):
            m = sensitivity[ids]
            expected = m * radon(x, theta=theta[ids], circle=True).T + additive[ids]
            ratio = np.where(expected > 0, m * counts[ids] / np.maximum(expected, 1e-12), 0)
            x = np.where(norm > 0, x * back(ratio, ids) / np.maximum(norm, 1e-12), 0)
    return x


def time_simulation(slices: int, seed: int) -> dict:
    projector.cache_clear()  # count the system-matrix build, as a fresh process would
    t0, c0 = time.perf_counter(), time.process_time()
    study = simulate_pet(slices=slices, seed=seed)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    # the projector is single-threaded scipy: CPU seconds ≈ wall seconds on an idle machine
    return {
        "total_s": total,
        "cpu_s": cpu,
        "stages_s": study.seconds,
        "share": {k: v / total for k, v in study.seconds.items()},
        "planes": slices,
        "study": study,
    }


def time_baseline(study, planes: int) -> dict:
    """The same OSEM on the middle ``planes`` of the 10-minute frame: scikit-image's projector vs ours."""
    config = PetSimConfig()
    proj = projector(config.matrix, config.pixel_mm, config.views, config.subsets)
    start = study.truth.shape[0] // 2 - planes // 2
    part = replace(
        study.phantom,
        activity=study.truth[start : start + planes],
        mu=study.phantom.mu[start : start + planes],
    )
    data = acquire(part, proj=proj, config=config, minutes=(10.0,), rng=np.random.default_rng(0))
    counts, sens, additive = data.counts[10.0], data.sensitivity[10.0], data.additive[10.0]
    t0 = time.perf_counter()
    for k in range(planes):
        skimage_osem(
            counts[k].astype(np.float64),
            sens[k],
            additive[k],
            views=config.views,
            subsets=config.subsets,
            iterations=config.iterations,
        )
    per_plane = (time.perf_counter() - t0) / planes
    t0 = time.perf_counter()
    osem(counts, proj=proj, sensitivity=sens, additive=additive, iterations=config.iterations)
    ours_per_plane = (time.perf_counter() - t0) / planes
    return {
        "planes": planes,
        "skimage_osem_s_per_plane_frame": per_plane,
        "pairless_osem_s_per_plane_frame_same_planes": ours_per_plane,
    }


def time_demo(seed: int) -> dict:
    from pairless.experiments.pet import PetStudyConfig, run_pet_study

    projector.cache_clear()
    with tempfile.TemporaryDirectory() as tmp:
        t0, c0 = time.perf_counter(), time.process_time()
        result = run_pet_study(Path(tmp) / "demo", config=PetStudyConfig(seed=seed), progress=False)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "total_s": total,
        "cpu_s": cpu,
        "stages_s": result.seconds,
        "share": {k: v / total for k, v in result.seconds.items()},
        "table1": result.table1(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=61)
    parser.add_argument("--baseline-slices", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "pet_speed.json")
    args = parser.parse_args()

    sim = time_simulation(args.slices, args.seed)
    study = sim.pop("study")
    frames = len(study.images)
    print(
        f"simulation + OSEM of one study ({args.slices} planes, {frames} frames): {sim['total_s']:.1f} s"
        f" wall, {sim['cpu_s']:.1f} s CPU (target < 30 s)"
    )
    for stage, seconds in sim["stages_s"].items():
        print(f"  {stage:<15} {seconds:7.2f} s  {100 * sim['share'][stage]:5.1f} %")
    base = time_baseline(study, args.baseline_slices)
    baseline_study = base["skimage_osem_s_per_plane_frame"] * args.slices * frames
    ratio = baseline_study / sim["stages_s"]["osem"]
    print(
        f"baseline scikit-image radon OSEM: {base['skimage_osem_s_per_plane_frame']:.2f} s per plane and"
        " frame "
        f"-> {baseline_study:.0f} s for the study's OSEM; pairless OSEM {ratio:.1f}x faster "
        "(same planes:"
        f" {base['skimage_osem_s_per_plane_frame'] / base['pairless_osem_s_per_plane_frame_same_planes']:.1f}x)"  # noqa: E501
    )
    numbers = {
        "machine": platform.processor() or platform.machine(),
        "simulation": sim,
        "baseline": base,
        "osem_speedup_vs_skimage": ratio,
    }
    if not args.skip_demo:
        demo = time_demo(args.seed)
        print(
            f"pairless demo (quick profile, end to end): {demo['total_s']:.1f} s wall, {demo['cpu_s']:.1f} s"
            " CPU (target < 300 s)"
        )
        for stage, seconds in demo["stages_s"].items():
            print(f"  {stage:<24} {seconds:7.2f} s  {100 * demo['share'][stage]:5.1f} %")
        numbers["demo"] = demo
    with atomic_path(args.json) as tmp:
        tmp.write_text(json.dumps(numbers, indent=2, default=float))
    print(f"numbers written to {args.json}")


if __name__ == "__main__":
    main()
