"""Denoising on a Dask cluster: a LocalCluster of 2 workers × 1 thread against the single-process path.

One noisy volume (``--slices`` × ``--side``² float32, default 256×512², written slab by slab into a
temporary zarr array) is denoised by the default U-Net (Noise2Void, depth 2, 32 filters) trained
``--steps`` steps on a few of its slices, or by the model folder ``--model`` (trained into it first
if it does not exist, so a second run reuses it):

1. single process, torch at 1 thread: :func:`pairless.inference.chunked.denoise_chunked`;
2. a ``LocalCluster`` of 2 worker processes × 1 Dask thread, torch at 1 thread in each:
   :func:`pairless.inference.distributed.denoise_distributed` with the same blocks and halo.  The
   output is compared with 1 (max |Δ| over the range, and whether it is bit-identical); throughput
   is 1's time over 2's (the cluster's start, and the workers' imports and model load in a one-block
   warm-up run, are timed apart); the overhead per block is the time the workers did not spend in
   the denoiser, ``2 × wall − Σ denoise``, over ``Σ denoise`` (split into the tasks' own reading and
   writing, and the rest: scheduling, idle workers, each run's check of the workers);
3. the same run with one worker SIGKILLed when a block drawn at random (``--seed``) finishes: the
   output must be bit-identical to 2's;
4. peak memory per worker (``VmHWM``, reset before each run through ``/proc/PID/clear_refs``) and the
   client's, for ``--memory-slices`` (default 64 and 1024 slices): the ratios largest/smallest.

The processor's model and its bf16/AMX flags are recorded with the results, which go to
``benchmarks/results/distributed.json``.  The issue's targets: throughput ≥ 1.8× with 2 free cores,
overhead < 5 % of compute, memory ratios ≤ 1.1, the fault run bit-identical.

Usage: ``python benchmarks/distributed.py [--slices 256] [--side 512] [--memory-slices 64 1024]``
``[--block 4 512 512] [--halo 32] [--steps 300] [--model DIR] [--seed 0] [--json PATH]``
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

# This file's name is also that of dask's package `distributed`: keep its folder off the import path, or
# `import distributed` (here and in every worker process, which starts from this path) would find it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402

from pairless.io.files import atomic_path  # noqa: E402


def make_volume(path: Path, slices: int, side: int, *, seed: int) -> Path:
    """A smooth volume with Gaussian noise, written slab by slab (never whole in memory)."""
    import zarr

    rng = np.random.default_rng(seed)
    array = zarr.create_array(
        store=str(path), shape=(slices, side, side), chunks=(16, 256, 256), dtype="float32", compressors=None
    )
    y, x = np.mgrid[:side, :side].astype(np.float32) / side
    for start in range(0, slices, 16):
        z = np.arange(start, min(start + 16, slices), dtype=np.float32)[:, None, None] / side
        smooth = 100 + 50 * np.sin(8 * x + 4 * z) * np.cos(6 * y)
        array[start : start + len(z)] = smooth + rng.normal(0, 20, smooth.shape).astype(np.float32)
    array.attrs["axes"] = "ZYX"
    return path


def trained_model(folder: Path, source: Path, steps: int) -> Path:
    """The default U-Net (Noise2Void) trained ``steps`` steps on up to 4 slices of ``source``."""
    import zarr

    import pairless

    if (folder / "config.yaml").is_file():
        return folder
    volume = zarr.open_array(str(source), mode="r")
    slices = [np.asarray(volume[i]) for i in range(min(4, volume.shape[0]))]
    pairless.fit("n2v", slices, axes="YX", out=folder, steps=steps, progress=False)
    return folder


def peak_mib(pid: str | int = "self") -> float:
    """The process's peak resident memory since its last reset (``VmHWM``), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    """Restart ``VmHWM`` from the current resident size (Linux: write 5 to clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


def worker_peak() -> float:
    return peak_mib()


def cpu() -> dict:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = next(
        (line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []
    )
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if "model name" in line), "")
    return {
        "model": model or platform.processor(),
        "cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx": sorted(f for f in flags if f.startswith("amx")),
        "load_avg": os.getloadavg(),
    }


def run_cluster(
    client, source: Path, target: Path, loader, *, block, halo, kill_at: int | None = None
) -> dict:
    """One distributed run on ``client``'s workers; with ``kill_at``, SIGKILL a worker when that many
    blocks have finished."""
    from pairless.inference.distributed import denoise_distributed

    pids = client.run(os.getpid)
    client.run(reset_peak)
    reset_peak()
    sums = {"blocks": 0, "denoise_s": 0.0, "read_write_s": 0.0}
    killed = {}

    def on_block(result):
        sums["blocks"] += 1
        sums["denoise_s"] += result["denoise_s"]
        sums["read_write_s"] += result["read_write_s"]
        if kill_at is not None and sums["blocks"] == kill_at and not killed:
            victim = sorted(pids)[kill_at % len(pids)]
            killed.update(worker=victim, pid=pids[victim], after_blocks=kill_at)
            os.kill(pids[victim], signal.SIGKILL)

    started = time.perf_counter()
    denoise_distributed(
        source, target, loader, scheduler=client, block=block, halo=halo, threads=1, on_block=on_block
    )
    wall = time.perf_counter() - started
    client_peak = peak_mib()
    peaks = {} if killed else client.run(worker_peak)
    workers = len(pids)
    busy = sums["denoise_s"]
    return {
        "seconds": wall,
        **sums,
        "workers": workers,
        "overhead_vs_compute": (workers * wall - busy) / busy,
        "io_in_tasks_vs_compute": sums["read_write_s"] / busy,
        "scheduling_and_idle_vs_compute": (workers * wall - busy - sums["read_write_s"]) / busy,
        "overhead_per_block_ms": 1000 * (workers * wall - busy) / max(sums["blocks"], 1),
        "worker_peak_mib": max(peaks.values()) if peaks else None,
        "client_peak_mib": client_peak,
        "killed": killed or None,
    }


def warm_up(client, loader, work: Path) -> float:
    """Every worker imports pairless and loads the model (the preflight of a one-block run); timed
    apart from the runs, as the cluster's start is."""
    from pairless.inference.distributed import denoise_distributed

    source = work / "warm.zarr"
    if not source.exists():
        make_volume(source, 1, 64, seed=0)
    started = time.perf_counter()
    denoise_distributed(source, work / "warm-out.zarr", loader, scheduler=client, block=64, halo=0, threads=1)
    shutil.rmtree(work / "warm-out.zarr")
    return time.perf_counter() - started


def compare(a, b) -> dict:
    import zarr

    x, y = zarr.open_array(str(a), mode="r"), zarr.open_array(str(b), mode="r")
    worst, low, high, identical = 0.0, np.inf, -np.inf, True
    for start in range(0, x.shape[0], 16):  # slab by slab: the volumes may be larger than memory
        p, q = np.asarray(x[start : start + 16]), np.asarray(y[start : start + 16])
        worst = max(worst, float(np.abs(p - q).max()))
        low, high = min(low, float(q.min())), max(high, float(q.max()))
        identical = identical and bool(np.array_equal(p, q))
    return {"max_abs_diff_over_range": worst / (high - low), "bit_identical": identical}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=256, help="slices of the throughput volume")
    parser.add_argument("--side", type=int, default=512, help="Y and X of every volume")
    parser.add_argument("--memory-slices", type=int, nargs=2, default=[64, 1024], metavar=("FEW", "MANY"))
    parser.add_argument("--block", type=int, nargs=3, default=[4, 512, 512], help="block edges Z Y X")
    parser.add_argument("--halo", type=int, default=32)
    parser.add_argument("--steps", type=int, default=300, help="training steps of the U-Net")
    parser.add_argument("--model", type=Path, help="model folder to use (trained into it if missing)")
    parser.add_argument("--seed", type=int, default=0, help="draws the block after which a worker is killed")
    parser.add_argument("--work", type=Path, help="folder for the volumes (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "distributed.json")
    args = parser.parse_args()

    import torch

    from pairless import api
    from pairless.inference.chunked import denoise_chunked
    from pairless.inference.distributed import connect

    torch.set_num_threads(1)
    block = tuple(min(b, n) for b, n in zip(args.block, (args.slices, args.side, args.side)))
    work = Path(tempfile.mkdtemp(prefix="pairless-distributed-", dir=args.work))
    report: dict = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "volume": [args.slices, args.side, args.side],
        "block": block,
        "halo": args.halo,
        "cpu": cpu(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    try:
        source = make_volume(work / "v.zarr", args.slices, args.side, seed=1)
        model = trained_model(args.model or work / "model", source, args.steps)
        report["model"] = {"folder": str(model), "steps": args.steps if args.model is None else "given"}
        loader = functools.partial(api.load, str(model.resolve()))

        started = time.perf_counter()
        denoise_chunked(source, work / "one.zarr", loader(), block=block, halo=args.halo)
        single = time.perf_counter() - started
        print(f"single process, 1 thread: {single:.1f} s", flush=True)

        started = time.perf_counter()
        with connect("local:2") as client:
            report["cluster_start_s"] = time.perf_counter() - started
            report["warm_up_s"] = warm_up(client, loader, work)
            clean = run_cluster(client, source, work / "two.zarr", loader, block=block, halo=args.halo)
            print(f"LocalCluster 2×1: {clean['seconds']:.1f} s", flush=True)
            n_blocks = clean["blocks"]
            kill_at = random.Random(args.seed).randint(1, max(1, n_blocks - 2))
            fault = run_cluster(
                client, source, work / "fault.zarr", loader, block=block, halo=args.halo, kill_at=kill_at
            )
            print(f"with a worker killed after block {kill_at}: {fault['seconds']:.1f} s", flush=True)
            client.wait_for_workers(2, timeout=120)
            report["warm_up_after_fault_s"] = warm_up(client, loader, work)  # the restarted worker
            memory = {}
            for slices in args.memory_slices:
                volume = make_volume(work / f"m{slices}.zarr", slices, args.side, seed=2)
                memory[slices] = run_cluster(
                    client, volume, work / f"m{slices}-out.zarr", loader, block=block, halo=args.halo
                )
                print(f"{slices} slices: {memory[slices]['seconds']:.1f} s", flush=True)
                shutil.rmtree(volume)
                shutil.rmtree(work / f"m{slices}-out.zarr")
        same = compare(work / "two.zarr", work / "one.zarr")
        faulted = compare(work / "fault.zarr", work / "two.zarr")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    few, many = args.memory_slices
    summary = {
        "single_process_s": single,
        "cluster_s": clean["seconds"],
        "throughput_ratio": single / clean["seconds"],
        "max_abs_diff_over_range": same["max_abs_diff_over_range"],
        "bit_identical_to_single_process": same["bit_identical"],
        "overhead_vs_compute": clean["overhead_vs_compute"],
        "overhead_per_block_ms": clean["overhead_per_block_ms"],
        "blocks": n_blocks,
        "worker_peak_mib": {str(s): memory[s]["worker_peak_mib"] for s in args.memory_slices},
        "worker_peak_ratio": memory[many]["worker_peak_mib"] / memory[few]["worker_peak_mib"],
        "client_peak_mib": {str(s): memory[s]["client_peak_mib"] for s in args.memory_slices},
        "client_peak_ratio": memory[many]["client_peak_mib"] / memory[few]["client_peak_mib"],
        "fault_killed": fault["killed"],
        "fault_bit_identical": faulted["bit_identical"],
    }
    report.update(summary=summary, runs={"clean": clean, "fault": fault, "memory": memory})
    rows = [
        ("single process, 1 thread (s)", f"{single:.1f}", ""),
        (
            "LocalCluster 2 workers × 1 thread (s)",
            f"{clean['seconds']:.1f}",
            f"start {report['cluster_start_s']:.1f} s and model load {report['warm_up_s']:.1f} s apart",
        ),
        ("throughput ratio", f"{summary['throughput_ratio']:.2f}", "target ≥ 1.8 with 2 free cores"),
        ("max |Δ| / range vs single process", f"{same['max_abs_diff_over_range']:.2e}", ""),
        ("bit-identical to single process", str(same["bit_identical"]), ""),
        ("overhead / compute", f"{clean['overhead_vs_compute']:.3f}", "target < 0.05"),
        ("  of which reading and writing in tasks", f"{clean['io_in_tasks_vs_compute']:.3f}", ""),
        ("  of which scheduling, idle, worker checks", f"{clean['scheduling_and_idle_vs_compute']:.3f}", ""),
        ("overhead per block (ms)", f"{clean['overhead_per_block_ms']:.0f}", f"{n_blocks} blocks"),
        (
            f"worker peak {few} → {many} slices (MiB)",
            f"{memory[few]['worker_peak_mib']:.0f} → {memory[many]['worker_peak_mib']:.0f}",
            f"ratio {summary['worker_peak_ratio']:.3f}, target ≤ 1.1",
        ),
        (
            f"client peak {few} → {many} slices (MiB)",
            f"{memory[few]['client_peak_mib']:.0f} → {memory[many]['client_peak_mib']:.0f}",
            f"ratio {summary['client_peak_ratio']:.3f}",
        ),
        (f"worker SIGKILLed after block {kill_at}: bit-identical", str(faulted["bit_identical"]), ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\n{args.slices}×{args.side}² float32, block {'×'.join(map(str, block))}, halo {args.halo}")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>14}  {note}")
    flags = report["cpu"]
    print(f"cpu: {flags['model']}; avx512_bf16 {flags['avx512_bf16']}; amx {flags['amx'] or 'none'}")
    with atomic_path(args.json) as tmp_json:
        tmp_json.write_text(json.dumps(report, indent=2, default=str))
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
