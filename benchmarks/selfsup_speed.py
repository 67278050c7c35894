"""Self-supervised training and inference speed on this machine, against bare PyTorch and its own bf16 matmul.

Every figure is measured in the same run as its baseline, so the ratios are less sensitive than the
absolute numbers to other processes on a shared machine (the JSON keeps every timing and the load):

* training: 64×64 patches, batch 16, the default U-Net (depth 2, 32 filters).  Baseline = a bare fp32
  NCHW loop (forward, masked MSE on a fixed mask, backward, Adam).  pairless = the N2V module's own
  step (blind-spot masking, N2V loss) with the precision and memory layout training picks, fused
  Adam; plus ``pairless.fit("n2v", ...)`` end to end (Lightning, patch sampling, validation, checkpoints).
* inference: a 2048² image (1024² with ``--quick``).  Baseline = one plain fp32 forward of the whole
  image.  pairless = ``predict_tiled`` (tile 256, overlap 32, blended) with its default precision,
  run in a fresh process whose peak RSS (``ru_maxrss``) is reported.
* per method (n2v, ne2ne, bsn, zsn2n): one training step of its quick profile (its loss, its network,
  the precision ``selfsup.train`` picks), patches/s and achieved GFLOP/s as a fraction of the bf16 matmul.
* achieved GFLOP/s (conv/matmul FLOPs from ``FlopCounterMode``) against fp32 and bf16 matmuls.

Usage: ``python benchmarks/selfsup_speed.py [--quick] [--no-fit] [--json PATH]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from pairless import api
from pairless.io.files import atomic_path
from pairless.methods.n2v import N2V, N2VConfig
from pairless.nets.unet import UNet
from pairless.training.selfsup import SelfSupervisedModule, resolve_precision

PATCH, BATCH = 64, 16


def timed(fn, *, reps: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def matmul_gflops(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n**3 / statistics.median(timed(lambda: a @ b, reps=reps)) / 1e9


def conv_gflops(dtype: torch.dtype, reps: int = 5) -> float:
    """The machine's own 3×3 convolution throughput (64→64 channels, 8×128², channels-last, forward)."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(dtype=dtype, memory_format=torch.channels_last)
    x = torch.randn(8, 64, 128, 128, dtype=dtype).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        seconds = statistics.median(timed(lambda: conv(x), reps=reps))
    return 2 * 64 * 64 * 9 * 8 * 128 * 128 / seconds / 1e9


def flops(net: torch.nn.Module, x: torch.Tensor, *, backward: bool) -> int:
    with FlopCounterMode(display=False) as counter:
        out = net(x)
        if backward:
            out.sum().backward()
    return counter.get_total_flops()


def bare_training_step(net, opt, x, mask):
    opt.zero_grad(set_to_none=True)
    loss = ((net(x) - x) ** 2 * mask).sum() / mask.sum()
    loss.backward()
    opt.step()


def pairless_training_step(module, opt, x, generator, precision):
    opt.zero_grad(set_to_none=True)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        loss = module.objective.loss(module.net, x, generator=generator, progress=0.0)
    loss.backward()
    opt.step()


def training(reps: int) -> dict:
    config = N2VConfig()
    precision, channels_last = resolve_precision(config)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, 1, PATCH, PATCH, generator=g)
    mask = (torch.rand(x.shape, generator=g) < config.mask_fraction).float()

    torch.manual_seed(0)
    bare_net = UNet()
    bare_opt = torch.optim.Adam(bare_net.parameters(), lr=1e-3)
    bare = timed(lambda: bare_training_step(bare_net, bare_opt, x, mask), reps=reps)

    torch.manual_seed(0)
    module = SelfSupervisedModule(UNet(), N2V(config), channels_last=channels_last)
    opt = torch.optim.Adam(module.parameters(), lr=1e-3, fused=True)
    pairless = timed(lambda: pairless_training_step(module, opt, x, g, precision), reps=reps)

    step_flops = flops(UNet(), x, backward=True)
    bare_s, pairless_s = statistics.median(bare), statistics.median(pairless)
    return {
        "precision": precision,
        "channels_last": channels_last,
        "step_gflop": step_flops / 1e9,
        "bare_fp32_step_s": bare_s,
        "bare_fp32_patches_per_s": BATCH / bare_s,
        "pairless_step_s": pairless_s,
        "pairless_patches_per_s": BATCH / pairless_s,
        "ratio_vs_bare": bare_s / pairless_s,
        "ratio_vs_bare_fastest": min(bare) / min(pairless),  # least disturbed by other processes
        "bare_gflops": step_flops / bare_s / 1e9,
        "pairless_gflops": step_flops / pairless_s / 1e9,
        "all_step_times_s": {"bare": bare, "pairless": pairless},
    }


def method_steps(reps: int) -> dict:
    """One quick-profile training step of every self-supervised method: patches/s and achieved GFLOP/s."""
    from pairless.methods import registry

    out = {}
    for name in registry.names("self-supervised"):
        cls = registry.get(name).implementation()
        config = cls.config_class.for_profile("quick")
        objective = cls(config)
        if hasattr(objective, "noise_model"):
            objective.noise_model = {"a": 0.0, "b": 0.1}
        precision, channels_last = resolve_precision(config)
        torch.manual_seed(0)
        module = SelfSupervisedModule(objective.make_net(), objective, channels_last=channels_last)
        opt = torch.optim.Adam(module.parameters(), lr=1e-4, fused=True)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(config.batch_size, 1, config.patch_size, config.patch_size, generator=g)
        dtype = {"bf16-mixed": torch.bfloat16}.get(precision)

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                loss = objective.loss(module.net, x, generator=g, progress=0.5)
            loss.backward()
            opt.step()

        with FlopCounterMode(display=False) as counter:
            step()
        times = timed(step, reps=reps)
        s = statistics.median(times)
        out[name] = {
            "batch": config.batch_size,
            "patch": config.patch_size,
            "precision": precision,
            "step_s": s,
            "patches_per_s": config.batch_size / s,
            "megapixels_per_s": config.batch_size * config.patch_size**2 / s / 1e6,
            "gflops": counter.get_total_flops() / s / 1e9,
            "all_step_times_s": times,
        }
    return out


def fit_end_to_end(steps: int) -> dict:
    """``pairless.fit("n2v", ...)`` as a user runs it, on one noisy 512² image: whole wall time, Lightning
    included."""
    rng = np.random.default_rng(0)
    image = (rng.random((512, 512)) * 0.2 + rng.normal(0, 0.1, (512, 512))).astype(np.float32)
    config = N2VConfig(steps=steps, val_every=max(steps // 2, 1))
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        api.fit("n2v", [image], axes="YX", out=Path(out), config=config, progress=False)
        wall = time.perf_counter() - t
    return {"steps": steps, "wall_s": wall, "patches_per_s": steps * BATCH / wall}


# Run in a fresh interpreter that imports only what prediction needs, so ``ru_maxrss`` is the peak of
# tiled inference as a user's `pairless denoise` process would see it (torch and the net included).
_INFERENCE_CHILD = """
import json, resource, sys, time
import torch
from pairless.nets.unet import UNet
from pairless.inference.tiling import predict_tiled
size, reps = int(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
net = UNet().eval()
x = torch.randn(1, 1, size, size, generator=torch.Generator().manual_seed(1))
predict_tiled(net, x[..., :512, :512])  # warm-up: oneDNN primitive creation
times = []
for _ in range(reps):
    t = time.perf_counter()
    predict_tiled(net, x, tile=256, overlap=32)
    times.append(time.perf_counter() - t)
print(json.dumps({"times": times, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def inference(size: int, reps: int) -> dict:
    command = [sys.executable, "-c", _INFERENCE_CHILD, str(size), str(reps)]
    child = subprocess.run(command, capture_output=True, text=True, check=True)
    tiled = json.loads(child.stdout.strip().splitlines()[-1])

    torch.manual_seed(0)
    net = UNet().eval()
    x = torch.randn(1, 1, size, size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        bare = timed(lambda: net(x), reps=max(reps // 2, 1), warmup=1)
    mp = size * size / 1e6
    pixel_flops = flops(net, x[..., :256, :256], backward=False) / 256**2
    bare_s, tiled_s = statistics.median(bare), statistics.median(tiled["times"])
    return {
        "image": [size, size],
        "tile": 256,
        "overlap": 32,
        "forward_flop_per_pixel": pixel_flops,
        "bare_fp32_untiled_s": bare_s,
        "bare_fp32_mp_per_s": mp / bare_s,
        "pairless_tiled_s": tiled_s,
        "pairless_mp_per_s": mp / tiled_s,
        "ratio_vs_bare": bare_s / tiled_s,
        "ratio_vs_bare_fastest": min(bare) / min(tiled["times"]),
        "pairless_peak_rss_mib": tiled["peak_rss_mib"],
        "bare_gflops": pixel_flops * mp * 1e6 / bare_s / 1e9,
        "pairless_gflops": pixel_flops * mp * 1e6 / tiled_s / 1e9,  # useful work: tile overlaps not counted
        "all_times_s": {"bare": bare, "pairless": tiled["times"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run: fewer reps, 1024² inference image")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "selfsup_speed.json")
    parser.add_argument("--no-fit", action="store_true", help="skip the end-to-end N2V fit timing")
    args = parser.parse_args()

    started = time.perf_counter()
    result = {
        "machine": {
            "cpu_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "load_average_start": os.getloadavg(),
        },
        "quick": args.quick,
        "fp32_matmul_gflops": matmul_gflops(torch.float32),
        "bf16_matmul_gflops": matmul_gflops(torch.bfloat16),
        "bf16_conv_gflops": conv_gflops(torch.bfloat16),
    }
    result["training"] = training(reps=10 if args.quick else 30)
    result["methods"] = method_steps(reps=5 if args.quick else 15)
    if not args.no_fit:
        result["fit_n2v"] = fit_end_to_end(steps=40 if args.quick else 200)
    result["inference"] = inference(1024 if args.quick else 2048, reps=2 if args.quick else 3)
    result["machine"]["load_average_end"] = os.getloadavg()
    result["wall_s"] = time.perf_counter() - started
    for part in ("training", "inference"):
        for dtype in ("fp32", "bf16"):
            result[part][f"pairless_vs_{dtype}_matmul"] = (
                result[part]["pairless_gflops"] / result[f"{dtype}_matmul_gflops"]
            )

    t, i = result["training"], result["inference"]
    print(
        f"matmul 2048²: fp32 {result['fp32_matmul_gflops']:.0f} GFLOP/s, bf16"
        f" {result['bf16_matmul_gflops']:.0f} GFLOP/s; bf16 3×3 conv {result['bf16_conv_gflops']:.0f} GFLOP/s"
    )
    print(
        f"training  64², batch 16: pairless {t['pairless_patches_per_s']:.0f} patches/s ({t['precision']}, "
        f"channels_last={t['channels_last']}) vs bare fp32 {t['bare_fp32_patches_per_s']:.0f}: "
        f"×{t['ratio_vs_bare']:.2f} (fastest runs ×{t['ratio_vs_bare_fastest']:.2f}); "
        f"{t['pairless_gflops']:.0f} GFLOP/s "
        f"({t['pairless_vs_fp32_matmul']:.2f}× fp32 matmul, {t['pairless_vs_bf16_matmul']:.2f}× bf16 matmul)"
    )
    for name, m in result["methods"].items():
        print(
            f"  {name:<6} step (batch {m['batch']} of {m['patch']}², {m['precision']}):"
            f" {m['patches_per_s']:.0f} patches/s, {m['megapixels_per_s']:.2f} MP/s, {m['gflops']:.0f}"
            f" GFLOP/s = {m['gflops'] / result['bf16_conv_gflops']:.2f}× the bf16 3×3 convolution"
        )
    if "fit_n2v" in result:
        f = result["fit_n2v"]
        rate, steps, wall = f["patches_per_s"], f["steps"], f["wall_s"]
        print(f"fit_n2v end to end: {rate:.0f} patches/s ({steps} steps in {wall:.0f} s)")
    print(
        f"inference {i['image'][0]}², tiled 256/32: pairless {i['pairless_mp_per_s']:.2f} MP/s "
        f"vs bare fp32 untiled {i['bare_fp32_mp_per_s']:.2f}: ×{i['ratio_vs_bare']:.2f} "
        f"(fastest runs ×{i['ratio_vs_bare_fastest']:.2f}); "
        f"peak RSS {i['pairless_peak_rss_mib']:.0f} MiB; {i['pairless_gflops']:.0f} useful GFLOP/s"
    )
    machine = result["machine"]
    print(f"load average start {machine['load_average_start']}, end {machine['load_average_end']}")
    with atomic_path(args.json) as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
