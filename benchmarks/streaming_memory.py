"""Streaming over inputs: peak memory of ``pairless denoise`` against the number of input files.

Folders of 10, 100 and 1000 noisy 256×256 float32 TIFFs (256 KiB each) are written to a temporary
folder (deleted after use).  Each is denoised with a Gaussian (σ=1) in a fresh process by
``pairless denoise`` (``pairless.cli.main``: header checks, then one file at a time), and, for the
smaller folders, by the way ``pairless denoise`` worked before (read every input, denoise every one,
then write them all), the baseline measured in the same run.  The child reports its peak RSS
(``ru_maxrss``) after imports and at the end.  Linux carries the parent's peak RSS into a child's
``ru_maxrss`` across exec, so the parent stays small: it only starts processes, and the files are
made in children too.  The summary is the ratio of the peak RSS for the most files to that for the
fewest (1.0 = flat) for both ways.

Usage: ``python benchmarks/streaming_memory.py [--counts 10 100 1000] [--old-up-to 1000] [--side 256]``
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

CHILD = """
import json, resource, sys, time
from pathlib import Path
mode, folder, count, side = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
if mode == "make":
    import numpy as np, tifffile
    rng = np.random.default_rng(count)
    folder.mkdir(parents=True)
    for i in range(count):
        tifffile.imwrite(folder / f"frame{i:04d}.tif", rng.normal(100, 20, (side, side)).astype(np.float32))
    sys.exit()
import torch
torch.set_num_threads(1)
from pairless.cli import main
from pairless.denoiser import denoise_array
from pairless.io import read_image, write_image
from pairless.methods.classical import make_classical
inputs = sorted(folder.glob("*.tif"))
out = folder.parent / (folder.name + "-out")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
if mode == "streaming":
    code = main(["denoise", "gaussian", *map(str, inputs), "--sigma", "1", "--out", str(out)])
    assert code == 0, code
else:  # how `pairless denoise` worked before: everything read and denoised before anything is written
    denoiser = make_classical("gaussian", sigma=1.0)
    images = [read_image(p) for p in inputs]
    results = [denoise_array(image.data, denoiser, axes=image.axes) for image in images]
    for path, image, result in zip(inputs, images, results):
        write_image(out / path.name, image.with_data(result))
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert len(list(out.glob("*.tif"))) == len(inputs)
print(json.dumps({"base_mib": base / 1024, "peak_mib": peak / 1024, "seconds": seconds}))
"""


def child(*args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-c", CHILD, *args], capture_output=True, text=True, env=env, check=False
    )
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{run.stderr[-3000:]}")
    return run.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument(
        "--old-up-to", type=int, default=1000, help="largest count also run the old way (all in memory)"
    )
    parser.add_argument("--side", type=int, default=256, help="edge of each square float32 image")
    parser.add_argument(
        "--json", type=Path, default=Path(__file__).parent / "results" / "streaming_memory.json"
    )
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="pairless-streaming-") as tmp:
        for count in args.counts:
            folder = Path(tmp) / f"n{count}"
            child("make", str(folder), str(count), str(args.side))
            for mode in ["streaming", *(["all-in-memory"] if count <= args.old_up_to else [])]:
                result = json.loads(
                    child(mode, str(folder), str(count), str(args.side)).strip().splitlines()[-1]
                )
                shutil.rmtree(folder.parent / (folder.name + "-out"))
                rows.append({"files": count, "mode": mode, "file_kib": args.side**2 * 4 / 1024, **result})
                print(
                    f"{count:6d} files  {mode:<14} peak {result['peak_mib']:7.0f} MiB  (after imports "
                    f"{result['base_mib']:4.0f})  {result['seconds']:6.1f} s",
                    flush=True,
                )
            shutil.rmtree(folder)

    def peak(mode, count):
        return next((r["peak_mib"] for r in rows if (r["mode"], r["files"]) == (mode, count)), None)

    print(
        f"\n files  streaming peak (MiB)  all-in-memory peak (MiB)   [{args.side}x{args.side} float32 TIFFs,"
        " gaussian σ=1]"
    )
    for count in args.counts:
        old = peak("all-in-memory", count)
        print(f"{count:6d}  {peak('streaming', count):20.0f}  {'-' if old is None else f'{old:24.0f}'}")
    fewest, most = min(args.counts), max(args.counts)
    old_most = max(c for c in args.counts if c <= args.old_up_to) if args.old_up_to >= fewest else None
    summary = {
        f"streaming_peak_ratio_{most}_vs_{fewest}_files": peak("streaming", most) / peak("streaming", fewest),
        "files_ratio": most / fewest,
    }
    if old_most is not None and old_most > fewest:
        summary[f"all_in_memory_peak_ratio_{old_most}_vs_{fewest}_files"] = peak(
            "all-in-memory", old_most
        ) / peak("all-in-memory", fewest)
        summary[f"streaming_vs_all_in_memory_peak_at_{old_most}_files"] = peak("streaming", old_most) / peak(
            "all-in-memory", old_most
        )
    for key, value in summary.items():
        print(f"{key}: {value:.3f}")
    report = {
        "rows": rows,
        "summary": summary,
        "side": args.side,
        "threads_per_child": 1,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_avg": os.getloadavg()},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    from pairless.io.files import write_bytes

    write_bytes(args.json, json.dumps(report, indent=2).encode())
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
