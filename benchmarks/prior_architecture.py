"""Which network for the shipped noise-level-aware Gaussian prior (issue 23)? Candidates trained for
the same CPU time on one core, scored on held-out natural and real fluorescence images.

Candidates (all bias-free: no conv bias, no normalisation, so ``f(αy, ασ) = α·f(y, σ)``; all take the
noisy image and a σ map and predict the noise, ``out = y − net``):

- ``unet``: pairless's U-Net layout (depth 3, 32 filters, max-pool, bilinear up-sampling, two 3×3
  convolutions per level) without batch norm or biases, ``in_channels = 2``.
- ``ffdnet``: FFDNet (Zhang et al. 2018): pixel-unshuffle ×2 (4 image channels + the 2×2-averaged σ
  map), 15 plain 3×3 convolutions of width 64 at half resolution, pixel-shuffle back.  FFDNet trains
  with batch norm; without it (bias-free) this plain stack stayed near the identity in our runs.
- ``drunet``: a DRUNet-lite (Zhang et al. 2021): 4 scales of 32-64-128-256 channels, ``--drunet-blocks``
  residual blocks per scale, strided 2×2 convolutions down, transposed 2×2 up, additive skips
  (:class:`pairless.nets.prior_net.PriorNet` with that many blocks).

**Training** (identical for every candidate): clean 64² crops (random flips and 90° turns) drawn
from the allowed data only, BSD400 ``test_001``–``test_380``, W2S ch0 ``avg400_gt`` FOVs 001–025 and
the 30 ISBI 2012 EM slices, with the source weights of ``--mix``; intensities in [0, 1].  Noise per
crop: with probability ``--pg-prob`` Poisson–Gaussian, ``y = a·Poisson(max(x − x0, 0)/a) + x0 +
N(0, s²)`` with ``a`` log-uniform in ``--pg-a``, pedestal ``x0`` uniform in [0, 0.05] and read noise
``s`` uniform in [0, 10/255], whose variance is ``a·x + b`` with ``b = s² − a·x0`` (the fitted W2S
frames have ``b < 0``); otherwise Gaussian with σ uniform in [0, 55/255].  The σ map fed to the
network for Poisson–Gaussian crops is ``√max(a·u + b, 0)`` with ``u`` the 5×5 box-smoothed noisy
crop (``--sigma-map smooth``, what a user has at test time) or the clean crop (``clean``).  Adam,
MSE, learning rate ``--lr`` with a 2 % linear warm-up and cosine decay to 1 % over the budget
(``--minutes`` of the process's CPU time in training steps; evaluation is not counted),
``--precision`` fp32 or bf16 autocast.

**Validation** (never BSD68 nor W2S FOVs 031–040): BSD400 ``test_381``–``test_400`` (0–255 scale,
Gaussian noise drawn from ``default_rng([σ, i])``, unclipped) at σ = 15, 25, 50 with σ given and with σ
estimated from the noisy image by ``pairless.methods.classical._noise_sigma`` (the Gaussian noise fit;
``estimate_sigma``'s error is reported beside it); W2S ch0 FOVs 026–030 real single-frame noise
(``avg1_noisy`` vs ``avg400_gt``) through (i) a σ map from ``fit_poisson_gaussian`` of the noisy frame
evaluated on the smoothed noisy frame, and (ii) the generalized Anscombe transform (σ = 1 after it;
the stabilised frame is mapped affinely to [0, 1], σ scaled alike, and mapped back before
``gat_inverse``).  BM3D with σ known, and BM3D + VST on W2S, run on the same images in the same run
(``--bm3d-cache`` reuses a previous run's baseline file).  PSNR = 10·log10(255²/MSE) on float
outputs, neither clipped nor rounded (the project's convention), mean over images.
Inference: seconds for one 512² and one 2048² image, one thread, fp32 and bf16 autocast, NCHW and
channels-last (best layout reported), and the bf16 − fp32 PSNR change on BSD σ = 25.

Run pinned to one core: ``OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 taskset -c 0 python
benchmarks/prior_architecture.py --minutes 15``.  Results are merged, under ``--tag``, into
``benchmarks/results/prior_architecture.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pairless.nets.prior_net import PriorNet

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BSD = DATA / "natural" / "bsd400_train"
W2S = DATA / "fluo" / "w2s_ch0"
ISBI = DATA / "em" / "isbi2012" / "train_image"
VAL_SIGMAS = (15, 25, 50)
SIGMA_MAX = 55 / 255
SMOOTH = 5  # box width of the smoothed noisy image the Poisson–Gaussian σ map is evaluated on


# ----------------------------------------------------------------------------- candidates


class UNetBF(nn.Module):
    """pairless's U-Net layout (two 3×3 convolutions per level, max-pool, bilinear up), bias-free, no BN."""

    def __init__(self, depth: int = 3, filters: int = 32):
        super().__init__()
        self.depth, self.multiple = depth, 2**depth
        widths = [filters * 2**k for k in range(depth)]

        def block(a, b, c):
            return nn.Sequential(
                nn.Conv2d(a, b, 3, padding=1, bias=False),
                nn.ReLU(inplace=True),
                nn.Conv2d(b, c, 3, padding=1, bias=False),
                nn.ReLU(inplace=True),
            )

        self.down, cin = nn.ModuleList(), 2
        for w in widths:
            self.down.append(block(cin, w, w))
            cin = w
        self.bottom = block(cin, filters * 2**depth, widths[-1])
        self.up = nn.ModuleList(
            [block(2 * widths[k], widths[k], widths[max(k - 1, 0)]) for k in reversed(range(depth))]
        )
        self.head = nn.Conv2d(widths[0], 1, 1, bias=False)

    def forward(self, y, sigma_map):
        h, skips = torch.cat([y, sigma_map], 1), []
        for block in self.down:
            h = block(h)
            skips.append(h)
            h = F.max_pool2d(h, 2)
        h = self.bottom(h)
        for k, block in zip(reversed(range(self.depth)), self.up):
            h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
            h = block(torch.cat([h, skips[k]], 1))
        return y - self.head(h)


class FFDNetBF(nn.Module):
    """FFDNet: pixel-unshuffle ×2, a plain stack of 3×3 convolutions at half resolution, pixel-shuffle."""

    def __init__(self, layers: int = 15, width: int = 64):
        super().__init__()
        self.multiple = 2
        body: list[nn.Module] = [nn.Conv2d(5, width, 3, padding=1, bias=False), nn.ReLU(inplace=True)]
        for _ in range(layers - 2):
            body += [nn.Conv2d(width, width, 3, padding=1, bias=False), nn.ReLU(inplace=True)]
        body.append(nn.Conv2d(width, 4, 3, padding=1, bias=False))
        self.body = nn.Sequential(*body)

    def forward(self, y, sigma_map):
        h = torch.cat([F.pixel_unshuffle(y, 2), F.avg_pool2d(sigma_map, 2)], 1)
        return y - F.pixel_shuffle(self.body(h), 2)


def build(name: str, drunet_blocks: int) -> nn.Module:
    if name == "unet":
        return UNetBF()
    if name == "ffdnet":
        return FFDNetBF()
    if name == "drunet":
        return PriorNet(blocks=drunet_blocks)
    raise SystemExit(f"unknown candidate {name!r}; use unet, ffdnet, drunet")


def macs_per_pixel(net: nn.Module, size: int = 64) -> float:
    """Multiply-accumulates of every (transposed) convolution per input pixel."""
    total = 0

    def hook(m, inputs, output):
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1]
        if isinstance(m, nn.ConvTranspose2d):
            total += inputs[0].numel() * m.out_channels * k
        else:
            total += output.numel() * m.in_channels // m.groups * k

    hooks = [
        m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
    ]
    with torch.no_grad():
        net(torch.zeros(1, 1, size, size), torch.zeros(1, 1, size, size))
    for h in hooks:
        h.remove()
    return total / size**2


# ----------------------------------------------------------------------------- data


def _read(path: Path) -> np.ndarray:
    from pairless.io import read_image

    return read_image(path, axes="YX").data.astype(np.float32)


def training_sets() -> dict[str, list[np.ndarray]]:
    """Clean training images in [0, 1]: the validation images and FOVs 026–040 are left out."""
    return {
        "bsd": [_read(BSD / f"test_{i:03d}.png") / 255 for i in range(1, 381)],
        "w2s": [_read(W2S / "avg400_gt" / f"{i:03d}.png") / 255 for i in range(1, 26)],
        "isbi": [_read(p) / 255 for p in sorted(ISBI.glob("*.png"))],
    }


def smooth(y: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(F.pad(y, (SMOOTH // 2,) * 4, mode="reflect"), SMOOTH, stride=1)


class Sampler:
    """Noisy/clean/σ-map training batches, as described in the module docstring."""

    def __init__(self, sets, mix, *, patch, batch, pg_prob, pg_a, sigma_map, seed):
        self.sets = {k: v for k, v in sets.items() if mix.get(k, 0) > 0}
        self.names = list(self.sets)
        weights = np.array([mix[k] for k in self.names], dtype=np.float64)
        self.weights = weights / weights.sum()
        self.patch, self.batch, self.pg_prob, self.pg_a, self.sigma_map = (
            patch,
            batch,
            pg_prob,
            pg_a,
            sigma_map,
        )
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator().manual_seed(seed)

    def crop(self) -> np.ndarray:
        images = self.sets[self.names[self.rng.choice(len(self.names), p=self.weights)]]
        image = images[self.rng.integers(len(images))]
        p = self.patch
        y0, x0 = (self.rng.integers(s - p + 1) for s in image.shape)
        c = np.rot90(image[y0 : y0 + p, x0 : x0 + p], self.rng.integers(4))
        return c[:, ::-1] if self.rng.random() < 0.5 else c

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, rng = self.batch, self.rng
        x = torch.from_numpy(np.stack([self.crop() for _ in range(b)])[:, None].copy())
        pg = torch.from_numpy(rng.random(b) < self.pg_prob)
        sigma = torch.from_numpy(rng.uniform(0, SIGMA_MAX, b).astype(np.float32))
        a = torch.from_numpy(np.exp(rng.uniform(*np.log(self.pg_a), b)).astype(np.float32))
        x0 = torch.from_numpy(rng.uniform(0, 0.05, b).astype(np.float32))
        s = torch.from_numpy(rng.uniform(0, 10 / 255, b).astype(np.float32))
        a, x0, s, sigma = (v.view(b, 1, 1, 1) for v in (a, x0, s, sigma))
        gauss = x + sigma * torch.randn(x.shape, generator=self.gen)
        shot = (
            a * torch.poisson((x - x0).clamp_min(0) / a, generator=self.gen)
            + x0
            + s * torch.randn(x.shape, generator=self.gen)
        )
        m = pg.view(b, 1, 1, 1)
        y = torch.where(m, shot, gauss)
        u = smooth(y) if self.sigma_map == "smooth" else x
        pg_map = (a * u + s * s - a * x0).clamp_min(0).sqrt()
        return y, x, torch.where(m, pg_map, sigma.expand_as(x))


# ----------------------------------------------------------------------------- training and inference


def lr_at(fraction: float, lr: float) -> float:
    if fraction < 0.02:
        return lr * fraction / 0.02
    return lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(fraction, 1.0))))


def apply(
    net, y: np.ndarray, sigma_map: np.ndarray, *, bf16: bool = False, channels_last: bool = False
) -> np.ndarray:
    """Denoise one 2D image in [0, 1] units, reflect-padded to the network's multiple."""
    m = net.multiple
    h, w = y.shape
    pad = (0, (-w) % m, 0, (-h) % m)
    yt = F.pad(torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))[None, None], pad, mode="reflect")
    st = F.pad(
        torch.from_numpy(np.ascontiguousarray(sigma_map, dtype=np.float32))[None, None], pad, mode="reflect"
    )
    if channels_last:
        yt, st = (
            yt.contiguous(memory_format=torch.channels_last),
            st.contiguous(memory_format=torch.channels_last),
        )
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = net(yt, st)
    return out.float()[0, 0, :h, :w].numpy()


def psnr(x: np.ndarray, ref: np.ndarray) -> float:
    from pairless.metrics.image import psnr as _psnr

    return float(_psnr(x, ref, data_range=255.0))


def bsd_validation() -> tuple[list[np.ndarray], dict[int, list[np.ndarray]]]:
    clean = [_read(BSD / f"test_{i:03d}.png") for i in range(381, 401)]
    noisy = {
        s: [
            (c + np.random.default_rng([s, i]).normal(0, s, c.shape)).astype(np.float32)
            for i, c in enumerate(clean)
        ]
        for s in VAL_SIGMAS
    }
    return clean, noisy


def w2s_validation() -> tuple[list[np.ndarray], list[np.ndarray]]:
    ids = range(26, 31)
    return (
        [_read(W2S / "avg1_noisy" / f"{i:03d}.png") for i in ids],
        [_read(W2S / "avg400_gt" / f"{i:03d}.png") for i in ids],
    )


def score_bsd(
    net, clean, noisy, *, sigma_source: str = "given", bf16: bool = False, sigmas=VAL_SIGMAS
) -> dict:
    from pairless.methods.classical import _noise_sigma

    out = {}
    for s in sigmas:
        scores = []
        for c, y in zip(clean, noisy[s]):
            est = s if sigma_source == "given" else _noise_sigma(y)
            scores.append(
                psnr(255 * apply(net, y / 255, np.full(y.shape, est / 255, np.float32), bf16=bf16), c)
            )
        out[s] = float(np.mean(scores))
    return out


def score_w2s(net, noisy, clean) -> dict:
    from pairless.noise import fit_poisson_gaussian, gat, gat_inverse

    rows = {"sigma map": [], "sigma map (raw noisy)": [], "gat": []}
    for z, g in zip(noisy, clean):
        model = fit_poisson_gaussian(z)
        y = z / 255
        a, b = model.a / 255, model.b / 255**2
        u = smooth(torch.from_numpy(y)[None, None])[0, 0].numpy()
        rows["sigma map"].append(psnr(255 * apply(net, y, np.sqrt(np.maximum(a * u + b, 0))), g))
        rows["sigma map (raw noisy)"].append(psnr(255 * apply(net, y, np.sqrt(np.maximum(a * y + b, 0))), g))
        d = gat(z, model)
        lo, hi = float(d.min()), float(d.max())
        dn = apply(net, (d - lo) / (hi - lo), np.full(d.shape, 1 / (hi - lo), np.float32)) * (hi - lo) + lo
        rows["gat"].append(psnr(gat_inverse(dn, model), g))
    return {k: float(np.mean(v)) for k, v in rows.items()}


def sigma_errors(noisy) -> dict:
    from pairless.methods.classical import _noise_sigma
    from pairless.noise import estimate_sigma

    out = {}
    for s in VAL_SIGMAS:
        for name, f in (("noise_fit", _noise_sigma), ("estimate_sigma", estimate_sigma)):
            err = np.array([f(y) - s for y in noisy[s]])
            out[f"{name} σ{s}"] = {
                "mean_error": float(err.mean()),
                "mean_abs_error": float(np.abs(err).mean()),
            }
    return out


def bm3d_baseline(clean, noisy, w2s_noisy, w2s_clean) -> dict:
    from pairless.denoiser import denoise_array
    from pairless.methods.classical import make_classical

    t = time.perf_counter()
    out = {
        f"bsd σ{s}": float(
            np.mean(
                [
                    psnr(denoise_array(y, make_classical("bm3d", sigma=float(s)), axes="YX"), c)
                    for y, c in zip(noisy[s], clean)
                ]
            )
        )
        for s in VAL_SIGMAS
    }
    out["w2s bm3d+vst"] = float(
        np.mean(
            [
                psnr(denoise_array(z, make_classical("bm3d", vst=True), axes="YX"), g)
                for z, g in zip(w2s_noisy, w2s_clean)
            ]
        )
    )
    out["w2s input"] = float(np.mean([psnr(z, g) for z, g in zip(w2s_noisy, w2s_clean)]))
    out["seconds"] = time.perf_counter() - t
    return out


def inference_times(net) -> dict:
    """Seconds for one image (one thread); best of 2 at 512², one run at 2048² in the faster layout."""
    out = {}
    rng = np.random.default_rng(0)
    for bf16 in (False, True):
        key = "bf16" if bf16 else "fp32"
        best = None
        for cl in (False, True):
            net.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
            y = rng.random((512, 512), dtype=np.float32)
            times = []
            for _ in range(3):
                t = time.perf_counter()
                apply(net, y, np.full_like(y, 0.1), bf16=bf16, channels_last=cl)
                times.append(time.perf_counter() - t)
            out[f"512 {key} {'channels_last' if cl else 'nchw'}"] = min(times[1:])
            if best is None or min(times[1:]) < best[0]:
                best = (min(times[1:]), cl)
        net.to(memory_format=torch.channels_last if best[1] else torch.contiguous_format)
        y = rng.random((2048, 2048), dtype=np.float32)
        t = time.perf_counter()
        apply(net, y, np.full_like(y, 0.1), bf16=bf16, channels_last=best[1])
        out[f"2048 {key} {'channels_last' if best[1] else 'nchw'}"] = time.perf_counter() - t
        out[f"512 {key}"], out[f"2048 {key}"] = (
            best[0],
            out[f"2048 {key} {'channels_last' if best[1] else 'nchw'}"],
        )
    net.to(memory_format=torch.contiguous_format)
    return out


def train(net, sampler, *, seconds, lr, bf16, channels_last, curve_every, curve_fn) -> dict:
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    spent, steps, losses, curve = 0.0, 0, [], []
    next_curve, wall = curve_every, 0.0
    while spent < seconds:
        # the budget is the process's CPU time, not wall time: the machine's other core runs other
        # work, which would otherwise hand the candidates unequal shares of this one
        t, w = time.process_time(), time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = lr_at(spent / seconds, lr)
        y, x, s = sampler()
        if channels_last:
            y, s = (
                y.contiguous(memory_format=torch.channels_last),
                s.contiguous(memory_format=torch.channels_last),
            )
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(y, s)
        loss = F.mse_loss(out.float(), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        steps += 1
        spent += time.process_time() - t
        wall += time.perf_counter() - w
        if spent >= next_curve or spent >= seconds:
            net.eval()
            net.to(memory_format=torch.contiguous_format)
            curve.append(
                {
                    "train_cpu_s": round(spent),
                    "train_wall_s": round(wall),
                    "steps": steps,
                    "loss": float(np.mean(losses[-50:])),
                    "bsd_σ25": curve_fn(net),
                }
            )
            print(
                f"    {spent:7.0f} s CPU {wall:7.0f} s wall {steps:6d} steps  loss {curve[-1]['loss']:.2e}  "
                f"BSD σ25 {curve[-1]['bsd_σ25']:.2f} dB",
                flush=True,
            )
            if channels_last:
                net.to(memory_format=torch.channels_last)
            net.train()
            next_curve += curve_every
    net.to(memory_format=torch.contiguous_format)
    return {"steps": steps, "train_cpu_s": spent, "train_wall_s": wall, "curve": curve}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", default="unet,ffdnet,drunet")
    parser.add_argument("--minutes", type=float, default=15.0, help="training CPU time per candidate")
    parser.add_argument(
        "--drunet-blocks", type=int, default=1, help="residual blocks per scale of the drunet candidate"
    )
    parser.add_argument(
        "--precision", choices=("fp32", "bf16"), default="fp32", help="training precision (autocast)"
    )
    parser.add_argument("--channels-last", action="store_true", help="train in channels-last memory format")
    parser.add_argument(
        "--mix", default="bsd=0.75,w2s=0.125,isbi=0.125", help="source weights of the training crops"
    )
    parser.add_argument(
        "--pg-prob", type=float, default=0.5, help="share of crops with Poisson-Gaussian noise"
    )
    parser.add_argument(
        "--pg-a", default="0.002,0.15", help="range of the Poisson gain a (log-uniform, [0, 1] units)"
    )
    parser.add_argument("--sigma-map", choices=("smooth", "clean"), default="smooth")
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--curve-every", type=float, default=180.0, help="seconds of training between σ25 checks"
    )
    parser.add_argument(
        "--bm3d-cache", type=Path, default=None, help="reuse (or write) the BM3D baseline here"
    )
    parser.add_argument("--no-timing", action="store_true", help="skip the inference timings")
    parser.add_argument("--save", type=Path, default=None, help="folder for the trained weights")
    parser.add_argument("--tag", default="main", help="key of this run in the JSON file")
    parser.add_argument(
        "--json", type=Path, default=Path(__file__).parent / "results" / "prior_architecture.json"
    )
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    mix = {k: float(v) for k, v in (item.split("=") for item in args.mix.split(","))}
    pg_a = tuple(float(v) for v in args.pg_a.split(","))
    clean, noisy = bsd_validation()
    w2s_noisy, w2s_clean = w2s_validation()
    if args.bm3d_cache is not None and args.bm3d_cache.is_file():
        baseline = json.loads(args.bm3d_cache.read_text())
    else:
        print("BM3D baseline ...", flush=True)
        baseline = bm3d_baseline(clean, noisy, w2s_noisy, w2s_clean)
        if args.bm3d_cache is not None:
            args.bm3d_cache.write_text(json.dumps(baseline, indent=2))
    errors = sigma_errors(noisy)
    sets = training_sets()
    results = {}
    for name in args.candidates.split(","):
        torch.manual_seed(args.seed)
        net = build(name, args.drunet_blocks)
        params = sum(p.numel() for p in net.parameters())
        macs = macs_per_pixel(net)
        print(
            f"{name}: {params / 1e6:.3f} M parameters, {macs / 1e3:.1f} kMAC/pixel; "
            f"training {args.minutes} CPU-min",
            flush=True,
        )
        sampler = Sampler(
            sets,
            mix,
            patch=args.patch,
            batch=args.batch,
            pg_prob=args.pg_prob,
            pg_a=pg_a,
            sigma_map=args.sigma_map,
            seed=args.seed,
        )
        log = train(
            net,
            sampler,
            seconds=60 * args.minutes,
            lr=args.lr,
            bf16=args.precision == "bf16",
            channels_last=args.channels_last,
            curve_every=args.curve_every,
            curve_fn=lambda n: score_bsd(n, clean, noisy, sigmas=(25,))[25],
        )
        net.eval()
        if args.save is not None:
            args.save.mkdir(parents=True, exist_ok=True)
            torch.save(net.state_dict(), args.save / f"{args.tag}_{name}.pt")
        row = {
            "parameters": params,
            "kmac_per_pixel": macs / 1e3,
            **{k: v for k, v in log.items()},
            "bsd_sigma_given": score_bsd(net, clean, noisy),
            "bsd_sigma_estimated": score_bsd(net, clean, noisy, sigma_source="estimated"),
            "bsd_σ25_bf16_inference": score_bsd(net, clean, noisy, bf16=True, sigmas=(25,))[25],
            "w2s": score_w2s(net, w2s_noisy, w2s_clean),
        }
        if not args.no_timing:
            row["inference_s"] = inference_times(net)
        results[name] = row
        print(
            json.dumps({k: v for k, v in row.items() if k != "curve"}, indent=1, ensure_ascii=False),
            flush=True,
        )

    header = (
        f"{'candidate':<9}{'params M':>9}{'kMAC/px':>8}{'steps':>7}"
        + "".join(f"{'σ' + str(s):>7}" for s in VAL_SIGMAS)
        + "".join(f"{'σ̂' + str(s):>7}" for s in VAL_SIGMAS)
        + f"{'W2S map':>8}{'W2S GAT':>8}{'bf16Δ':>7}{'512² s':>7}{'bf16':>6}{'2048² s':>8}{'bf16':>6}"
    )
    print(
        f"\nrun {args.tag}: {args.minutes} min training per candidate, {args.precision}, mix {args.mix}, "
        f"pg {args.pg_prob} a∈{pg_a}, σ map {args.sigma_map}, patch {args.patch}, batch {args.batch}, "
        f"lr {args.lr}, "
        f"{torch.get_num_threads()} thread(s)"
    )
    print(header)
    for name, r in results.items():
        t = r.get("inference_s", {})
        print(
            f"{name:<9}{r['parameters'] / 1e6:>9.3f}{r['kmac_per_pixel']:>8.1f}{r['steps']:>7d}"
            + "".join(f"{r['bsd_sigma_given'][s]:>7.2f}" for s in VAL_SIGMAS)
            + "".join(f"{r['bsd_sigma_estimated'][s]:>7.2f}" for s in VAL_SIGMAS)
            + f"{r['w2s']['sigma map']:>8.2f}{r['w2s']['gat']:>8.2f}"
            + f"{r['bsd_σ25_bf16_inference'] - r['bsd_sigma_given'][25]:>7.3f}"
            + "".join(
                f"{t.get(k, float('nan')):>{w}.2f}"
                for k, w in (("512 fp32", 7), ("512 bf16", 6), ("2048 fp32", 8), ("2048 bf16", 6))
            )
        )
    print(
        f"{'BM3D':<33}"
        + "".join(f"{baseline[f'bsd σ{s}']:>7.2f}" for s in VAL_SIGMAS)
        + " " * 21
        + f"{baseline['w2s bm3d+vst']:>8.2f}  (σ known; W2S: + VST; noisy input {baseline['w2s input']:.2f})"
    )
    for k, v in errors.items():
        print(
            f"  σ estimate {k}: mean error {v['mean_error']:+.2f}, "
            f"mean |error| {v['mean_abs_error']:.2f} (0-255)"
        )

    args.json.parent.mkdir(parents=True, exist_ok=True)
    report = json.loads(args.json.read_text()) if args.json.is_file() else {}
    report[args.tag] = {
        "command": "OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 taskset -c 0 python " + " ".join(sys.argv),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average": os.getloadavg(),
        "validation": "BSD400 test_381-400 (σ 15/25/50, rng([σ, i])), W2S ch0 FOVs 026-030 avg1 vs avg400",
        "bm3d": baseline,
        "sigma_estimate_errors": errors,
        "candidates": results,
    }
    args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
