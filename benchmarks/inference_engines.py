"""Inference engines on the CPU: MP/s, peak memory and accuracy per engine, against today's PyTorch path
in the same run; and out-of-core OME-Zarr peak memory as the volume grows 16×.

Model: the default U-Net (depth 2, 32 filters, batch norm; 333,729 parameters), trained here for
``--steps`` supervised steps on noisy/clean patches of scikit-image's ``camera`` (σ = 25/255), so it
is a real denoiser and the PSNR against the clean image means something (600 steps: ~28 dB from
20.2; a 60-step model's own bias made bf16's ΔPSNR look like a constant −0.07 dB, while on trained
checkpoints it is −0.04 to +0.05 dB).  Images: the camera tiled 4×4 (2048²) with fresh noise, and
a 64×512×512 stack of noisy camera slices (denoised slice by slice, the tiles of all slices pooled).
Both are predicted with :func:`pairless.inference.tiling.predict_tiled` (overlap 32, blended).

Rows are ``engine@tile``.  **Today's path** is ``torch@256``: PyTorch bf16 + channels-last with
256-px tiles, unbalanced, as it was when the issue was filed (a 512² slice in three 256-px tiles per
axis); every row's MP/s is divided by its MP/s *in this run*.  The other rows use the new default tile
(:data:`pairless.inference.tiling.DEFAULT_TILE`, balanced:
as few tiles as that edge needs, shrunk to the smallest edge that covers the image).

Each (engine, image) runs in a fresh process, so its peak RSS (``VmHWM``) is its own: the child loads the
model, makes the image, predicts a 512² crop once (export/compile and batch shapes are warmed; not timed),
then times one whole-image prediction.  ``torch`` is today's path (bf16 + channels-last on a CPU with native
bf16); every engine's MP/s is divided by its MP/s *in this run*. ``gate dB`` is the PSNR of the engine's
output against the fp32 PyTorch output at the same tile over its data range (the ``auto`` gate,
:data:`pairless.inference.engines.GATE_DB`, is ≥ 70 dB; ``inference_engines_gate50.json`` is a run with 50
dB); ``ΔPSNR`` is the change in denoising PSNR against the clean image.

Out of core: an OME-Zarr (NGFF 0.5) volume of ``--ooc-slices`` × 512 × 512 and one 16× deeper are
denoised by :func:`pairless.inference.chunked.denoise_chunked` (the engine ``auto`` picks, blocks of one
512² slice, halo 32) into OME-Zarr with its pyramid; the ratio of the two peak RSS is reported.
A first run of the small volume fills the ``auto`` cache (its probe holds every engine at once) and
is reported as ``probe``.

Usage: ``python benchmarks/inference_engines.py [--steps 600] [--engines ...] [--ooc-slices 64]``
``[--json PATH]``
Writes ``benchmarks/results/inference_engines.json`` by default.
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

SIGMA = 25 / 255
TODAY_TILE, OVERLAP = 256, 32
TODAY = f"torch@{TODAY_TILE}"
ENGINES = ["torch", "torch-fp32", "onnxruntime", "openvino-f32", "openvino-bf16", "auto"]

CHILD = r"""
import json, sys, time
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
from inference_engines import TODAY_TILE, load_net, make_image, peak_mib
from pairless.inference.tiling import predict_tiled
engine, kind, model, out, threads, tile = sys.argv[2:8]
tile = int(tile)
if tile == TODAY_TILE:  # today's path as it was: every tile at the full edge, the last ones mostly overlap
    import pairless.inference.tiling
    pairless.inference.tiling._balanced_edge = lambda size, tile, overlap, multiple: tile
torch.set_num_threads(int(threads))
net = load_net(model)
noisy, _ = make_image(kind)
x = torch.from_numpy(noisy)[:, None] if noisy.ndim == 3 else torch.from_numpy(noisy)[None, None]
base = peak_mib()
t = time.perf_counter()
predict_tiled(net, x[:1, :, :512, :512].contiguous(), tile=tile, overlap=%(overlap)d, multiple=4,
engine=engine)
warm = time.perf_counter() - t
t = time.perf_counter()
y = predict_tiled(net, x, tile=tile, overlap=%(overlap)d, multiple=4, engine=engine)
seconds = time.perf_counter() - t
peak = peak_mib()
np.save(out, y.numpy()[:, 0] if noisy.ndim == 3 else y.numpy()[0, 0])
print(json.dumps({"seconds": seconds, "warmup_s": warm, "base_mib": base, "peak_mib": peak}))
""" % {"overlap": OVERLAP}

OOC_CHILD = r"""
import json, sys, time
import torch
sys.path.insert(0, sys.argv[1])
from inference_engines import NetAsDenoiser, load_net, make_ngff, peak_mib
mode, model, source, target, threads, slices = sys.argv[2:8]
torch.set_num_threads(int(threads))
if mode == "make":
    make_ngff(source, int(slices))
    sys.exit()
from pairless.inference.chunked import denoise_chunked
from pairless.inference.engines import use_engine
denoiser = NetAsDenoiser(load_net(model))
base = peak_mib()
t = time.perf_counter()
with use_engine("auto"):
    denoise_chunked(source, target, denoiser, block=[1, 512, 512], halo=32)
seconds = time.perf_counter() - t
peak = peak_mib()
print(json.dumps({"seconds": seconds, "base_mib": base, "peak_mib": peak}))
"""


def peak_mib() -> float:
    """This process's own peak RSS in MiB: ``VmHWM`` belongs to the address space made at exec, whereas
    ``ru_maxrss`` carries the parent's peak into a child across exec (which would mask small peaks)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def camera() -> np.ndarray:
    from skimage import data

    return data.camera().astype(np.float32) / 255


def make_image(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """``(noisy, clean)``: the camera tiled 4×4 (``"2048"``) or a stack of 64 noisy camera slices
    (``"volume"``)."""
    clean = camera()
    if kind == "2048":
        clean = np.tile(clean, (4, 4))
        rng = np.random.default_rng(1)
    else:
        clean = np.repeat(clean[None], 64, axis=0)
        rng = np.random.default_rng(2)
    return (clean + rng.normal(0, SIGMA, clean.shape)).astype(np.float32), clean


def make_ngff(path: str, slices: int) -> None:
    """A noisy NGFF 0.5 volume of ``slices`` camera slices, written slice by slice (never whole in memory)."""
    import zarr
    from ome_zarr.format import FormatV05
    from ome_zarr.writer import write_multiscales_metadata

    clean = camera()
    group = zarr.open_group(path, mode="w", zarr_format=3)
    array = group.create_array(
        "0", shape=(slices, 512, 512), chunks=(1, 512, 512), dtype="float32", dimension_names=["z", "y", "x"]
    )
    rng = np.random.default_rng(3)
    for z in range(slices):
        array[z] = clean + rng.normal(0, SIGMA, clean.shape).astype(np.float32)
    axes = [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]
    write_multiscales_metadata(
        group,
        [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [2.0, 0.5, 0.5]}]}],
        fmt=FormatV05(),
        axes=axes,
    )


def load_net(path: str):
    import torch

    from pairless.nets.unet import UNet

    net = UNet()
    net.load_state_dict(torch.load(path, weights_only=True))
    return net.eval()


class NetAsDenoiser:
    """A 2D network as a pairless denoiser (the data is already in the network's units)."""

    def __new__(cls, net):

        from pairless.denoiser import Denoiser
        from pairless.inference.tiling import predict_tiled

        class _D(Denoiser):
            spatial_ndim = 2

            def __init__(self):
                super().__init__()
                self.net = net

            def forward(self, y, sigma=None):
                return predict_tiled(self.net, y, overlap=OVERLAP, multiple=4)

        return _D()


def train(path: Path, steps: int, threads: int) -> dict:
    """Train the default U-Net supervised on camera patches; save its weights to ``path``."""
    import torch

    from pairless.nets.unet import UNet

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    clean = torch.from_numpy(camera())
    rng = torch.Generator().manual_seed(0)
    net = UNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    t = time.perf_counter()
    for _ in range(steps):
        ys = torch.randint(0, 512 - 64, (16,), generator=rng)
        xs = torch.randint(0, 512 - 64, (16,), generator=rng)
        target = torch.stack([clean[y : y + 64, x : x + 64] for y, x in zip(ys, xs)])[:, None]
        noisy = target + SIGMA * torch.randn(target.shape, generator=rng)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.mse_loss(net(noisy).float(), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.save(net.state_dict(), path)
    return {"steps": steps, "seconds": time.perf_counter() - t, "final_loss": loss.item()}


def psnr(x: np.ndarray, ref: np.ndarray, span: float | None = None) -> float:
    span = float(ref.max() - ref.min()) if span is None else span
    mse = float(np.mean((x.astype(np.float64) - ref) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(span**2 / mse)


def run(script: str, *args: str) -> dict:
    here = str(Path(__file__).resolve().parent)
    done = subprocess.run([sys.executable, "-c", script, here, *args], capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--engines", nargs="+", default=ENGINES)
    parser.add_argument(
        "--images", nargs="*", default=["2048", "volume"], help="none: only the out-of-core part"
    )
    parser.add_argument(
        "--ooc-slices", type=int, default=64, help="slices of the smaller out-of-core volume (0: skip)"
    )
    parser.add_argument(
        "--json", type=Path, default=Path(__file__).resolve().parent / "results" / "inference_engines.json"
    )
    args = parser.parse_args()

    from pairless.inference.engines import candidates, installed
    from pairless.inference.tiling import DEFAULT_TILE
    from pairless.io.files import atomic_path

    # today's path and its fp32 twin at the old tile, then every engine at the default tile
    rows_run = [("torch", TODAY_TILE), ("torch-fp32", TODAY_TILE)] + [(e, DEFAULT_TILE) for e in args.engines]

    work = Path(tempfile.mkdtemp(prefix="pairless-engines-"))
    os.environ.setdefault("PAIRLESS_CACHE_DIR", str(work / "cache"))  # a fresh probe, measured in this run
    report = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "threads": args.threads,
            "python": platform.python_version(),
        },
        "installed": {e: installed(e) for e in ("onnxruntime", "openvino")},
        "auto_candidates": candidates(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "today": TODAY,
        "tile": DEFAULT_TILE,
        "overlap": OVERLAP,
    }
    try:
        model = work / "unet.pt"
        report["training"] = train(model, args.steps, args.threads)
        print("trained:", report["training"], flush=True)
        results = {}
        for kind in args.images:
            noisy, clean = make_image(kind)
            megapixels = noisy.size / 1e6
            rows = {}
            for engine, tile in rows_run:
                name = f"{engine}@{tile}"
                out = work / f"{kind}-{name}.npy"
                row = run(CHILD, engine, kind, str(model), str(out), str(args.threads), str(tile))
                if "error" not in row:
                    y = np.load(out)
                    row.update(mp_s=megapixels / row["seconds"], psnr_clean_db=psnr(y, clean, 1.0))
                rows[name] = row
                print(kind, name, row, flush=True)
            base = rows.get(TODAY, {}).get("mp_s")
            for name, row in rows.items():
                reference = work / f"{kind}-torch-fp32@{name.split('@')[1]}.npy"
                if "error" in row:
                    continue
                if base:
                    row["ratio_to_today"] = row["mp_s"] / base
                if reference.exists():
                    row["gate_db"] = psnr(np.load(work / f"{kind}-{name}.npy"), np.load(reference))
                    row["delta_psnr_db"] = row["psnr_clean_db"] - psnr(np.load(reference), clean, 1.0)
            results[kind] = {"megapixels": megapixels, "engines": rows}
        report["results"] = results
        cache = Path(os.environ["PAIRLESS_CACHE_DIR"]) / "engines.json"
        report["auto_probe"] = json.loads(cache.read_text()) if cache.exists() else {}
        if args.ooc_slices:
            ooc = {}
            # the first run probes the engines for auto (a one-off per model and tile shape, cached, and
            # holding every engine at once); it is reported apart so both measured runs read the cache
            for label, slices in (
                ("probe", args.ooc_slices),
                (str(args.ooc_slices), args.ooc_slices),
                (str(16 * args.ooc_slices), 16 * args.ooc_slices),
            ):
                source, target = work / f"v{slices}.ome.zarr", work / f"d{slices}.ome.zarr"
                made = run(
                    OOC_CHILD, "make", str(model), str(source), str(target), str(args.threads), str(slices)
                )
                row = (
                    made
                    if "error" in made
                    else run(
                        OOC_CHILD,
                        "chunked",
                        str(model),
                        str(source),
                        str(target),
                        str(args.threads),
                        str(slices),
                    )
                )
                if "error" not in row:
                    row["mp_s"] = slices * 512 * 512 / 1e6 / row["seconds"]
                ooc[label] = row
                print("out of core", label, slices, row, flush=True)
                shutil.rmtree(source, ignore_errors=True)
                shutil.rmtree(target, ignore_errors=True)
            small, big = (ooc[str(s)] for s in (args.ooc_slices, 16 * args.ooc_slices))
            if "peak_mib" in small and "peak_mib" in big:
                ooc["peak_ratio_16x"] = big["peak_mib"] / small["peak_mib"]
            report["out_of_core"] = ooc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.json) as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    for kind, result in report.get("results", {}).items():
        print(
            f"\n{kind} ({result['megapixels']:.1f} MP): engine@tile, MP/s, × {TODAY}, peak MiB, gate dB,"
            " ΔPSNR dB"
        )
        for name, row in result["engines"].items():
            if "error" in row:
                print(f"  {name:20s} error: {row['error']}")
                continue
            print(
                f"  {name:20s} {row['mp_s']:7.3f} {row.get('ratio_to_today', float('nan')):6.2f}×"
                f" {row['peak_mib']:8.1f} {row.get('gate_db', float('nan')):7.1f}"
                f" {row.get('delta_psnr_db', float('nan')):+8.4f}"
            )


if __name__ == "__main__":
    main()
