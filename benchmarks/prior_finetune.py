"""The prior fine-tuned by a self-supervised loss (``--init prior``, ``--adapt``) against BM3D + VST and
against the same training from scratch, in one run on one CPU core.

Cases:

- ``w2s`` (the issue's set case): W2S channel 0 (``/work/shared/data/fluo/w2s_ch0``, SOURCE.txt), every
  method trained on the 40 noisy single frames there (FOVs 001-040, noisy only: the 400-frame averages
  are never read for training) and scored on FOVs 031-040 (their noisy frames against their 400-frame
  averages, data range 255; the prior never saw FOVs 31-40, clean or noisy).  Rows: BM3D + VST
  (``api.load("bm3d", vst=True)``), the prior zero-shot (its default GAT route, and the σ-map route that
  ``--init prior`` starts from), ``ne2ne --init prior``, ``r2r --init prior``, and ``ne2ne``, ``r2r`` from
  scratch (quick profiles).  Each training gets ``--minutes`` CPU-minutes (default 10, ``time.process_time``
  of the whole fit, noise fit and validation included): its steps are set from a pilot of its own step
  time (so that the cosine schedule ends in the budget) and a callback stops it at the budget regardless.
- ``camera`` (the one-image mode): scikit-image's camera in [0, 1] + N(0, (25/255)²), unclipped,
  ``default_rng(0)`` (benchmarks/selfsup_quality.py's ``single`` case).  Rows: BM3D with σ known, the prior
  zero-shot, and ``--adapt S`` (``PriorDenoiser(adapt=S)``: S wall-clock seconds, the product's setting),
  with each adaptation loss.

``--tune`` runs the measurement that set :mod:`pairless.methods.prior.adapt`'s constants instead: on the
camera image and the W2S FOV-031 frame, ``PriorDenoiser(adapt=...)`` with each (loss, lr, patch, batch) of
a small grid, each adaptation given the same CPU seconds (``--tune-seconds``).

PSNR/SSIM by :mod:`pairless.metrics.image` on the float outputs (neither clipped nor rounded), mean of
the per-image values.  The last lines print each row against BM3D + VST (dB and the MSE ratio) and each
fine-tuning against the same method from scratch.  ``--prior`` takes another prior model folder
(``pairless pretrain``); the default is the shipped prior, so the numbers can be rerun with new weights.

Usage: ``OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/prior_finetune.py [--cases w2s,camera]
[--prior FOLDER] [--minutes 10] [--adapt-seconds 60] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from pairless.denoiser import denoise_array
from pairless.metrics.image import psnr, ssim

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
W2S = SHARED / "fluo" / "w2s_ch0"
EVAL_FOVS = tuple(range(31, 41))
SIGMA = 25 / 255
SAMPLES = (1, 8, 32)  # R2R's U-Net averaged over this many recorrupted inputs (1: the network on y)


# --------------------------------------------------------------------------------------------------
# data and scores


def w2s_data():
    from pairless.io import read_image

    names = sorted(p.name for p in (W2S / "avg1_noisy").glob("*.png"))
    train = [read_image(W2S / "avg1_noisy" / n, axes="YX").data.astype(np.float32) for n in names]
    test = [f"{i:03d}.png" for i in EVAL_FOVS]
    noisy = [read_image(W2S / "avg1_noisy" / n, axes="YX").data.astype(np.float32) for n in test]
    clean = [read_image(W2S / "avg400_gt" / n, axes="YX").data.astype(np.float32) for n in test]
    return train, noisy, clean


def camera_data():
    from skimage import data

    clean = data.camera().astype(np.float32) / 255
    noisy = (clean + np.random.default_rng(0).normal(0, SIGMA, clean.shape)).astype(np.float32)
    return noisy, clean


def scores(outputs, cleans, data_range) -> dict:
    p = [psnr(o, c, data_range=data_range) for o, c in zip(outputs, cleans)]
    s = [ssim(o, c, data_range=data_range) for o, c in zip(outputs, cleans)]
    mse = [float(np.mean((o.astype(np.float64) - c) ** 2)) for o, c in zip(outputs, cleans)]
    return {
        "psnr": float(np.mean(p)),
        "ssim": float(np.mean(s)),
        "mse": float(np.mean(mse)),
        "psnr_per_image": [round(v, 3) for v in p],
    }


def run_denoiser(name: str, denoiser, noisy, clean, data_range, **extra) -> dict:
    t0, w0 = time.process_time(), time.perf_counter()
    outputs = [denoise_array(image, denoiser, axes="YX") for image in noisy]
    row = {
        "row": name,
        **scores(outputs, clean, data_range),
        "infer_cpu_s": round(time.process_time() - t0, 1),
        "infer_wall_s": round(time.perf_counter() - w0, 1),
        **extra,
    }
    print(
        f"  {name:<34} {row['psnr']:.2f} dB  SSIM {row['ssim']:.4f}  ({row['infer_cpu_s']} CPU-s)", flush=True
    )
    return row


def prior_denoiser(source, **options):
    from pairless.methods import prior
    from pairless.methods.prior.finetune import read_prior

    return prior.load(*read_prior(source), **options)


# --------------------------------------------------------------------------------------------------
# training within a CPU budget


class CPUBudget(L.Callback):
    """Stops training once the process has used ``budget`` CPU seconds since ``t0``."""

    def __init__(self, t0: float, budget: float):
        self.t0, self.budget, self.steps, self.stopped = t0, budget, 0, False

    def on_train_batch_end(self, trainer, *args, **kwargs):
        self.steps = trainer.global_step
        if time.process_time() - self.t0 >= self.budget:
            trainer.should_stop = self.stopped = True


def seconds_per_step(objective, train) -> float:
    """CPU seconds of one training step (loss, backward, Adam) as the training runs it (precision, memory
    format), from a short pilot on the training data."""
    from pairless.training import selfsup

    config = objective.config
    stacks = selfsup.as_stacks(train, axes="YX", ndim=2)
    mean, std = selfsup.mean_std(stacks)
    objective.prepare(stacks, mean=mean, std=std)
    stacks = [((s - mean) / std).astype(np.float32) for s in stacks]
    net = objective.make_net()
    precision, channels_last = selfsup.resolve_precision(config, convolutions=2)
    net.to(memory_format=selfsup.memory_format(2, channels_last))
    sampler = selfsup.PatchSampler(stacks, (config.patch_size,) * 2, val_fraction=0.1, max_val=8, seed=0)
    rng = np.random.default_rng(0)
    optimiser = torch.optim.Adam(net.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(0)
    times = []
    for i in range(6):
        batch = torch.from_numpy(sampler.draw(config.batch_size, rng, rotate=True))
        t = time.process_time()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            loss = objective.loss(net, batch, generator=generator, progress=0.5)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        times.append(time.process_time() - t)
    return float(np.median(times[2:]))


def train_row(name, method, init, train, noisy, clean, *, source, budget, seed, folder) -> dict:
    from pairless.methods import registry
    from pairless.training import selfsup

    spec = registry.get(method)
    settings = {"init": "prior"} if init else {}
    config = spec.configure("quick", **settings)
    cls = spec.implementation()
    per_step = seconds_per_step(cls(config.model_copy(), prior=source), train)
    # validation: ~256 held-out patches every val_every steps, forward only (about 5 steps' worth)
    overhead = 1 + 5 / config.val_every
    steps = max(
        config.val_every, int(0.93 * budget / (per_step * overhead)) // config.val_every * config.val_every
    )
    config = spec.configure("quick", steps=steps, **settings)
    print(f"  {name}: {per_step:.3f} CPU-s/step in the pilot -> {steps} steps", flush=True)
    t0 = time.process_time()
    stop = CPUBudget(t0, budget)
    selfsup.train(
        cls(config, prior=source), train, axes="YX", out=folder, seed=seed, progress=False, callbacks=[stop]
    )
    train_cpu = time.process_time() - t0
    loaded = registry.load_model(folder)
    from pairless.training.modelio import read_model_folder

    written, weights = read_model_folder(folder, methods=(method,))
    done = stop.steps
    row = run_denoiser(
        name,
        loaded,
        noisy,
        clean,
        255.0,
        method=method,
        init="prior" if init else "none",
        steps_planned=steps,
        steps_done=done,
        stopped_by_budget=stop.stopped,
        best_step=written.get("best_step"),
        lr=config.lr,
        train_cpu_s=round(train_cpu, 1),
        pilot_cpu_s_per_step=round(per_step, 4),
        steps_per_cpu_min=round(60 * done / train_cpu, 1) if train_cpu else None,
    )
    if method == "r2r" and not init:  # the U-Net's inference: f(y) against the mean over K recorruptions
        row["samples"] = {}
        for k in SAMPLES:
            variant = selfsup.load_denoiser(cls, {**written, "samples": k}, weights)
            scored = run_denoiser(f"{name}, {k} recorruption(s)", variant, noisy, clean, 255.0)
            row["samples"][k] = {key: scored[key] for key in ("psnr", "ssim", "infer_cpu_s")}
    return row


# --------------------------------------------------------------------------------------------------
# cases


def case_w2s(args) -> list[dict]:
    from pairless import api

    train, noisy, clean = w2s_data()
    print(
        f"w2s: training on {len(train)} noisy frames, scoring FOVs {EVAL_FOVS[0]}-{EVAL_FOVS[-1]}", flush=True
    )
    rows = [
        run_denoiser("bm3d + vst", api.load("bm3d", vst=True), noisy, clean, 255.0),
        run_denoiser("prior zero-shot (gat)", prior_denoiser(args.prior), noisy, clean, 255.0),
        run_denoiser("prior zero-shot (σ map)", prior_denoiser(args.prior, vst="none"), noisy, clean, 255.0),
    ]
    budget = 60 * args.minutes
    plan = [
        ("ne2ne --init prior", "ne2ne", True),
        ("r2r --init prior", "r2r", True),
        ("ne2ne (scratch)", "ne2ne", False),
        ("r2r (scratch)", "r2r", False),
    ]
    for name, method, init in plan:
        if args.only and method not in args.only.split(","):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(
                train_row(
                    name,
                    method,
                    init,
                    train,
                    noisy,
                    clean,
                    source=args.prior,
                    budget=budget,
                    seed=args.seed,
                    folder=Path(tmp) / "model",
                )
            )
    return rows


def case_camera(args) -> list[dict]:
    from pairless import api

    noisy, clean = camera_data()
    print(f"camera: 512², σ = 25/255, --adapt {args.adapt_seconds} s (wall clock)", flush=True)
    rows = [
        run_denoiser("bm3d (σ known)", api.load("bm3d", sigma=SIGMA), [noisy], [clean], 1.0),
        run_denoiser("prior zero-shot", prior_denoiser(args.prior), [noisy], [clean], 1.0),
    ]
    import pairless.methods.prior.adapt as adapt_module

    original = adapt_module.adapt
    for loss in ("r2r", "ne2ne"):
        record: list = []

        def counted(*a, _loss=loss, _record=record, **kw):
            result = original(*a, **{**kw, "loss": _loss})
            _record.append((result.adapted_steps, result.best_step))
            return result

        adapt_module.adapt = counted
        try:
            denoiser = prior_denoiser(args.prior, adapt=args.adapt_seconds, seed=args.seed)
            rows.append(
                run_denoiser(
                    f"prior --adapt {args.adapt_seconds:g}s ({loss})", denoiser, [noisy], [clean], 1.0
                )
            )
        finally:
            adapt_module.adapt = original
        rows[-1].update(adapt_loss=loss, adapt_steps=record[0][0], adapt_best_step=record[0][1])
    return rows


def case_tune(args) -> list[dict]:
    """The grid that set adapt's constants: each adaptation ``--tune-seconds`` CPU seconds."""
    import pairless.methods.prior.adapt as adapt_module

    noisy_c, clean_c = camera_data()
    _, noisy_w, clean_w = w2s_data()
    images = [("camera σ=25", noisy_c, clean_c, 1.0), ("w2s 031", noisy_w[0], clean_w[0], 255.0)]
    grid = [
        dict(loss=loss, lr=lr, patch=64, batch=8) for loss in ("r2r", "ne2ne") for lr in (3e-5, 1e-4, 3e-4)
    ]
    grid += [
        dict(loss=loss, lr=args.tune_lr, patch=p, batch=b)
        for loss in ("r2r", "ne2ne")
        for p, b in ((128, 4), (64, 16))
    ]
    if args.tune_grid:
        grid = [dict(json.loads(item)) for item in args.tune_grid]
    rows = []
    original = adapt_module.adapt
    for label, noisy, clean, data_range in images:
        rows.append(
            {
                "image": label,
                **run_denoiser(
                    f"{label}: zero-shot", prior_denoiser(args.prior), [noisy], [clean], data_range
                ),
            }
        )
        for setting in grid:
            record: list = []

            def counted(*a, _setting=setting, _record=record, **kw):
                kw.pop("seconds", None)
                result = original(
                    *a, **kw, seconds=args.tune_seconds, clock=time.process_time, patience=None, **_setting
                )
                _record.append((result.adapted_steps, result.best_step))
                return result

            adapt_module.adapt = counted
            try:
                name = (
                    f"{label}: {setting['loss']} lr {setting['lr']:g} {setting['patch']}²×{setting['batch']}"
                )
                row = run_denoiser(
                    name, prior_denoiser(args.prior, adapt=1.0, seed=args.seed), [noisy], [clean], data_range
                )
            finally:
                adapt_module.adapt = original
            row.update(image=label, **setting, steps=record[0][0], best_step=record[0][1])
            print(f"    steps {row['steps']}, best step {row['best_step']}", flush=True)
            rows.append(row)
    return rows


def report(rows: list[dict]) -> None:
    baseline = next((r for r in rows if r["row"].startswith("bm3d")), None)
    if baseline is None:
        return
    print(f"\nagainst {baseline['row']} ({baseline['psnr']:.2f} dB):")
    for r in rows:
        if r is baseline:
            continue
        ratio = r["mse"] / baseline["mse"]
        print(f"  {r['row']:<34} {r['psnr'] - baseline['psnr']:+.2f} dB   MSE ratio {ratio:.3f}")
    by_name = {r["row"]: r for r in rows}
    for method in ("ne2ne", "r2r"):
        tuned, scratch = by_name.get(f"{method} --init prior"), by_name.get(f"{method} (scratch)")
        if tuned and scratch:
            print(f"  {method}: --init prior {tuned['psnr'] - scratch['psnr']:+.2f} dB over scratch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="w2s,camera", help="comma-separated: w2s, camera")
    parser.add_argument("--prior", default=None, help="prior model folder (default: the shipped prior)")
    parser.add_argument("--minutes", type=float, default=10.0, help="CPU-minutes per training (w2s)")
    parser.add_argument(
        "--adapt-seconds", type=float, default=60.0, help="--adapt budget (camera), wall clock"
    )
    parser.add_argument("--only", default="", help="train only these methods (ne2ne,r2r) in the w2s case")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tune", action="store_true", help="the adapt hyper-parameter grid instead")
    parser.add_argument(
        "--tune-seconds", type=float, default=60.0, help="CPU seconds per adaptation (--tune)"
    )
    parser.add_argument("--tune-lr", type=float, default=1e-4, help="lr of the patch/batch variants (--tune)")
    parser.add_argument(
        "--tune-grid",
        action="append",
        default=[],
        help='JSON settings, e.g. \'{"loss": "r2r", '
        '"lr": 1e-4, "patch": 64, "batch": 8}\' (repeat; replaces the grid)',
    )
    parser.add_argument("--json", type=Path, default=None, help="write the rows as JSON")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    out: dict = {"prior": args.prior or "shipped", "threads": torch.get_num_threads()}
    if args.tune:
        out["tune"] = case_tune(args)
    else:
        for case in args.cases.split(","):
            rows = {"w2s": case_w2s, "camera": case_camera}[case](args)
            out[case] = rows
            report(rows)
    out["wall_s"] = round(time.perf_counter() - started, 1)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))
        print(f"written {args.json}")


if __name__ == "__main__":
    main()
