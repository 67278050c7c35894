"""The Noise2Void paper's natural-image benchmark, for any self-supervised method: BSD68, Gaussian noise σ =
25, trained on BSD400.

Setting (Krull et al. 2019, Table 1; n2v's BSD68 reproduction notebook): grey images on the 0–255 scale, noise
``N(0, 25²)`` added once per image with a seeded generator and **not** clipped or rounded.  The method (N2V by
default) trains on the *noisy* BSD400 crops only and is scored on the 68 noisy test images against their clean
originals.  PSNR and SSIM use data range 255; SSIM is scikit-image's default (7×7 uniform window, sample
covariance, borders excluded); numbers are means over test images. Classical rows: a Gaussian filter tuned per
image by J-invariance (no clean data), non-local means with the known σ, and BM3D with the known σ when the
optional ``bm3d`` package is installed.

``profile="quick"`` trains with the method's quick profile and scores 12 of the 68 test images
(evenly spaced) so it runs in CPU minutes; ``"paper"`` uses the seed's schedule and all 68 images.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pairless.denoiser import Denoiser, denoise_array
from pairless.errors import PairlessError

DEFAULT_DATA = Path("../shared/data/natural")
SIGMA = 25.0
DATA_RANGE = 255.0
PAPER_N2V_PSNR = 27.71  # Krull et al. 2019, Table 1 (BSD68, σ=25)
QUICK_TEST_IMAGES = 12


def read_folder(folder: Path) -> list[np.ndarray]:
    """Every PNG of ``folder`` in name order, as float32 grey images on the 0–255 scale."""
    from pairless.io import read_image

    paths = sorted(folder.glob("*.png"))
    if not paths:
        raise PairlessError(
            f"{str(folder)!r} holds no PNG images; point --data at the folder with bsd400_train/ and bsd68/"
        )
    return [read_image(p, axes="YX").data.astype(np.float32) for p in paths]


def add_noise(image: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
    """``image + N(0, σ²)`` with σ = 25 on the 0–255 scale, unclipped (the paper's setting)."""
    return (image + rng.normal(0.0, SIGMA, image.shape)).astype(np.float32)


def reproduce_bsd68(
    out: str | Path,
    *,
    method: str = "n2v",
    profile: str = "quick",
    data: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
    config=None,
) -> Path:
    """Train ``method`` (a self-supervised method) on noisy BSD400, score it and the filters on noisy BSD68.

    ``out`` receives ``model/`` (the trained model folder), ``results.csv`` (the headline table),
    ``per_image.csv``, ``report.md`` / ``report.html`` and an example figure.  ``config`` (the
    method's configuration) replaces the profile's training settings.  Noise is drawn per image
    from ``(seed, image index)``, so both profiles score the same noisy images.
    Returns the path of ``report.html``.
    """
    from pairless import api
    from pairless.experiments.report import Report
    from pairless.methods import registry

    if profile not in ("quick", "paper"):
        raise PairlessError(f"unknown profile {profile!r}; use quick or paper")
    spec = registry.get(method, kinds=("self-supervised",))
    config = spec.configure(profile, config)
    root = Path(data) if data is not None else DEFAULT_DATA
    missing = [name for name in ("bsd400_train", "bsd68") if not (root / name).is_dir()]
    if missing:
        raise PairlessError(
            f"BSD data not found: {str(root)!r} lacks {' and '.join(m + '/' for m in missing)}; "
            "pass --data DIR pointing at the folder that holds bsd400_train/ and bsd68/ "
            "(grey PNGs, e.g. shared/data/natural)"
        )
    out = Path(out)
    started = time.perf_counter()

    train_clean = read_folder(root / "bsd400_train")
    test_all = read_folder(root / "bsd68")
    chosen = range(len(test_all))
    if profile == "quick" and len(test_all) > QUICK_TEST_IMAGES:
        chosen = np.linspace(0, len(test_all) - 1, QUICK_TEST_IMAGES).round().astype(int).tolist()
    train_noisy = [add_noise(im, rng=np.random.default_rng([seed, 0, i])) for i, im in enumerate(train_clean)]
    test_clean = [test_all[i] for i in chosen]
    test_noisy = [add_noise(test_all[i], rng=np.random.default_rng([seed, 1, i])) for i in chosen]

    t = time.perf_counter()
    learned = api.fit(
        method,
        train_noisy,
        axes="YX",
        out=out / "model",
        config=config,
        seed=seed,
        overwrite=True,  # the study's own model folder, trained again on each run
        progress=progress,
    )
    train_s = time.perf_counter() - t

    methods = _methods(spec.title, learned, out / "model")
    per_image, outputs = [], {}
    for name, (label, denoise) in methods.items():
        t = time.perf_counter()
        results = [denoise(y) for y in test_noisy]
        seconds = time.perf_counter() - t
        outputs[name] = results[0]
        for index, (result, clean) in enumerate(zip(results, test_clean)):
            scores = _scores(result, clean)
            per_image.append({"method": name, "image": index, **scores, "seconds": seconds / len(results)})
    wall_s = time.perf_counter() - started

    rows = []
    for name, (label, _) in methods.items():
        mine = [r for r in per_image if r["method"] == name]
        rows.append(
            {
                "method": label,
                "psnr_db": round(float(np.mean([r["psnr_db"] for r in mine])), 3),
                "ssim": round(float(np.mean([r["ssim"] for r in mine])), 4),
                "seconds_per_image": round(float(np.mean([r["seconds"] for r in mine])), 3),
                "source": "this run",
            }
        )
    rows.append(
        {
            "method": "Noise2Void, Krull et al. 2019 (Table 1)",
            "psnr_db": PAPER_N2V_PSNR,
            "ssim": "",
            "seconds_per_image": "",
            "source": "paper, all 68 images",
        }
    )

    report = Report(f"{spec.title} on BSD68, Gaussian noise σ = 25")
    report.add_text(
        f"Profile **{profile}**: {spec.title} trained on {len(train_noisy)} noisy BSD400 crops "
        f"({config.steps} steps, batch {config.batch_size}, {config.patch_size}² patches, lr {config.lr}, "
        f"{config.lr_schedule} schedule), scored on {len(test_clean)} of the {len(test_all)} BSD68 images"
        + (" (evenly spaced subset: the quick profile)" if len(test_clean) < len(test_all) else "")
        + f". Noise N(0, 25²) on the 0–255 scale, unclipped, seed {seed}. PSNR and SSIM with data range 255; "
        "SSIM is scikit-image's default (7×7 uniform window, sample covariance). Means over test images. "
        f"Training took {train_s:.0f} s, the whole run {wall_s:.0f} s."
    )
    if not _has_bm3d():
        report.add_text(
            "BM3D row omitted: the optional `bm3d` package is not installed (`pip install 'pairless[bm3d]'`)."
        )
    caption = "Mean PSNR (dB, data range 255) and SSIM on noisy BSD68, σ = 25"
    report.add_table(rows, caption=caption, name="results")
    report.add_table(per_image, caption="Per test image", name="per_image")
    figure = _figure(test_clean[0], test_noisy[0], outputs)
    report.add_figure(figure, caption="First test image", name="example")
    if (out / "model" / "loss.png").is_file():
        report.add_figure(
            out / "model" / "loss.png", caption=f"{spec.title} training and validation loss", name="loss"
        )
    return report.write(out)


def _methods(title: str, learned: Denoiser, model: Path) -> dict:
    """name -> (label, function noisy image -> estimate) for every row of the table."""
    from pairless import api
    from pairless.methods.classical import make_classical

    def run(denoiser: Denoiser):
        return lambda y: denoise_array(y, denoiser, axes="YX")

    methods = {
        "noisy": ("noisy input", lambda y: y),
        "gaussian": ("Gaussian filter (J-invariance)", run(make_classical("gaussian", auto=True))),
        "nlm": ("non-local means (σ = 25 known)", run(make_classical("nlm", sigma=SIGMA))),
    }
    if _has_bm3d():
        methods["bm3d"] = ("BM3D (σ = 25 known)", run(make_classical("bm3d", sigma=SIGMA)))
    methods["learned"] = (f"{title} (this run)", run(learned))
    methods["learned-tta"] = (f"{title} + 8-fold TTA (this run)", run(api.load(model, tta=True)))
    return methods


def _scores(result: np.ndarray, clean: np.ndarray) -> dict:
    from pairless.metrics.image import psnr, ssim

    return {
        "psnr_db": psnr(result, clean, data_range=DATA_RANGE),
        "ssim": ssim(result, clean, data_range=DATA_RANGE),
    }


def _has_bm3d() -> bool:
    import importlib.util

    return importlib.util.find_spec("bm3d") is not None


def _figure(clean: np.ndarray, noisy: np.ndarray, outputs: dict):
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    panels = [("clean", clean), ("noisy", noisy)] + [(k, v) for k, v in outputs.items() if k != "noisy"]
    fig = Figure(figsize=(3 * len(panels), 3.2))
    for ax, (title, image) in zip(fig.subplots(1, len(panels)), panels):
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        if title not in ("clean", "noisy"):
            title = f"{title} {_scores(image, clean)['psnr_db']:.2f} dB"
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    return fig
