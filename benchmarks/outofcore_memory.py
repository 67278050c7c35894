"""Out-of-core denoising: peak memory against volume size, block by block vs the whole volume in memory.

Zarr volumes of 64×512×512 float32 (64 MiB) and 2×, 4×, 8× as many slices (up to 512 MiB) are
written to a temporary folder one at a time (deleted after use).  Each is denoised in a fresh
process by :func:`pairless.inference.chunked.denoise_chunked` (Gaussian σ=1, blocks 64×128×128, halo 8 ≥
its 4σ support) and, for the smaller volumes, by the in-memory path (read it whole, ``denoise_array``,
write it whole) — the baseline measured in the same run.  The child reports its peak RSS
(``ru_maxrss``) after imports and at the end.  Linux carries the parent's peak RSS into a child's
``ru_maxrss`` across exec, so the parent stays small: it only starts processes, and the volumes and
the model are made in children too.  With ``--n2v`` a tiny untrained 2D N2V model is run
both ways on the smallest volume too (memory does not depend on the weights).

Usage: ``python benchmarks/outofcore_memory.py [--factors 1 2 4 8] [--in-memory-up-to 2] [--no-n2v]``
``[--json PATH]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pairless.io.files import atomic_path

SLICES, SIDE, HALO = 64, 512, 8
BLOCK = (64, 128, 128)  # whole blocks in every volume, the smallest included

CHILD = """
import json, resource, sys, time
import numpy as np, torch, zarr
torch.set_num_threads(1)
from pairless.inference.chunked import denoise_chunked
from pairless.denoiser import denoise_array
from pairless.methods.classical import make_classical
from pairless.methods.registry import load_model
mode, method, source, target, block, halo = sys.argv[1:7]
if mode == "make":
    sys.path.insert(0, method)
    from outofcore_memory import make_volume, tiny_n2v_model
    make_volume(source, int(block), seed=int(halo)) if block != "model" else tiny_n2v_model(source)
    sys.exit()
denoiser = make_classical("gaussian", sigma=1.0) if method == "gaussian" else load_model(method)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
if mode == "chunked":
    denoise_chunked(source, target, denoiser, axes="ZYX", block=[int(b) for b in block.split(",")],
    halo=int(halo))
else:
    volume = zarr.open(source, mode="r")[:]
    result = denoise_array(volume, denoiser, axes="ZYX")
    out = zarr.create_array(store=target, shape=result.shape, chunks=[int(b) for b in block.split(",")],
    dtype="float32")
    out[:] = result
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"base_mib": base / 1024, "peak_mib": peak / 1024, "seconds": seconds}))
"""


def make_volume(path: str, slices: int, *, seed: int) -> None:
    """A noisy volume written slab by slab, so making it never holds it whole either."""
    import zarr

    rng = np.random.default_rng(seed)
    array = zarr.create_array(
        store=str(path), shape=(slices, SIDE, SIDE), chunks=(32, 256, 256), dtype="float32", compressors=None
    )
    z, y, x = np.mgrid[:32, :SIDE, :SIDE].astype(np.float32) / SIDE
    for start in range(0, slices, 32):
        smooth = 100 + 50 * np.sin(8 * x + 4 * (z + start / SIDE)) * np.cos(6 * y)
        array[start : start + 32] = smooth + rng.normal(0, 20, smooth.shape).astype(np.float32)


def tiny_n2v_model(folder: str) -> Path:
    import torch

    from pairless.methods.n2v import N2V, N2VConfig
    from pairless.training.modelio import save_model_folder

    config = N2VConfig(depth=2, filters=8, precision="32-true")
    torch.manual_seed(0)
    net = N2V(config).make_net()
    model_config = {
        "method": "n2v",
        **config.model_dump(mode="json"),
        "normalisation": {"mean": 100.0, "std": 30.0},
    }
    return save_model_folder(folder, config=model_config, weights=net.state_dict())


def child(*args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-c", CHILD, *args], capture_output=True, text=True, env=env, check=False
    )
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{run.stderr[-3000:]}")
    return run.stdout


def measure(mode: str, method: str, source: Path, target: Path) -> dict:
    out = child(mode, method, str(source), str(target), ",".join(map(str, BLOCK)), str(HALO))
    shutil.rmtree(target, ignore_errors=True)
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--in-memory-up-to", type=int, default=2, help="largest factor also run in memory")
    parser.add_argument(
        "--no-n2v", action="store_true", help="skip the tiny N2V model on the smallest volume"
    )
    parser.add_argument(
        "--json", type=Path, default=Path(__file__).parent / "results" / "outofcore_memory.json"
    )
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="pairless-outofcore-") as tmp:
        tmp = Path(tmp)
        here = str(Path(__file__).resolve().parent)
        model = None if args.no_n2v else tmp / "n2v"
        if model is not None:
            child("make", here, str(model), "-", "model", "0")
        for factor in args.factors:
            slices = SLICES * factor
            source = tmp / f"v{factor}.zarr"
            child("make", here, str(source), "-", str(slices), str(factor))
            size_mib = slices * SIDE * SIDE * 4 / 2**20
            runs = [("chunked", "gaussian")]
            if factor <= args.in_memory_up_to:
                runs.append(("in-memory", "gaussian"))
            if model is not None and factor == min(args.factors):
                runs += [("chunked", str(model)), ("in-memory", str(model))]
            for mode, method in runs:
                result = measure(mode, method, source, tmp / "out.zarr")
                rows.append(
                    {
                        "factor": factor,
                        "shape": [slices, SIDE, SIDE],
                        "volume_mib": size_mib,
                        "mode": mode,
                        "method": "gaussian" if method == "gaussian" else "n2v (tiny, untrained)",
                        **result,
                    }
                )
                print(
                    f"{size_mib:8.0f} MiB  {mode:<9}  {rows[-1]['method']:<22} peak {result['peak_mib']:7.0f}"
                    f" MiB  (after imports {result['base_mib']:4.0f})  {result['seconds']:6.1f} s",
                    flush=True,
                )
            shutil.rmtree(source)

    def peak(mode, method, factor):
        return next(
            (r["peak_mib"] for r in rows if (r["mode"], r["method"], r["factor"]) == (mode, method, factor)),
            None,
        )

    smallest, largest = min(args.factors), max(args.factors)
    print(
        "\nvolume (MiB)  chunked peak (MiB)  in-memory peak (MiB)   [gaussian σ=1, block"
        f" {'×'.join(map(str, BLOCK))}, halo {HALO}]"
    )
    for factor in args.factors:
        memory = peak("in-memory", "gaussian", factor)
        print(
            f"{SLICES * factor * SIDE * SIDE * 4 / 2**20:12.0f}  {peak('chunked', 'gaussian', factor):18.0f} "
            f" {'-' if memory is None else f'{memory:20.0f}'}"
        )
    summary = {
        "chunked_peak_growth_largest_vs_smallest": (
            peak("chunked", "gaussian", largest) / peak("chunked", "gaussian", smallest)
        ),
        "volume_growth": largest / smallest,
        "chunked_vs_in_memory_peak_smallest": (
            peak("chunked", "gaussian", smallest) / peak("in-memory", "gaussian", smallest)
            if peak("in-memory", "gaussian", smallest)
            else None
        ),
    }
    if model is not None:
        summary["n2v_chunked_vs_in_memory_peak_smallest"] = peak(
            "chunked", "n2v (tiny, untrained)", smallest
        ) / peak("in-memory", "n2v (tiny, untrained)", smallest)
    for key, value in summary.items():
        print(f"{key}: {value:.3f}" if value is not None else f"{key}: -")
    report = {
        "rows": rows,
        "summary": summary,
        "block": BLOCK,
        "halo": HALO,
        "threads_per_child": 1,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_avg": os.getloadavg()},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    with atomic_path(args.json) as tmp_json:
        tmp_json.write_text(json.dumps(report, indent=2))
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
