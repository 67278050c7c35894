"""The README's real-noise figure (issue 23): input | BM3D + VST | prior | prior adapted, on images with no
ground truth, each row in one display window.

Images (``shared/data``, SOURCE.txt beside each; neither was read by the prior's training):

- ``fluo/n2v_fluo_samples/pn2v_convallaria_frame0000.tif``: one raw widefield frame of the PN2V
  Convallaria set (uint16, EMCCD);
- ``em/tem_lowdose_katsuno/train/0001.tif``: a low-dose TEM frame (uint16, shot noise).

Each is denoised whole and shown as its centre ``--crop`` pixels. Rows: the crop; BM3D + VST
(``api.load("bm3d", vst=True)``: Poisson-Gaussian fit, generalized Anscombe, BM3D σ = 1, unbiased inverse),
the strongest classical method for this noise; the shipped prior zero-shot (``api.load("prior")``: the same
fitted noise model, through the GAT); the prior adapted to the frame for ``--adapt`` seconds (``pairless
denoise prior --adapt 60s``). The window is the input's 0.5-99.5 percentiles, the same for every panel of a
row. Without ground truth there is no PSNR; the JSON records each output's seconds and the noise model
fitted, so the figure can be regenerated and compared.

Usage: ``OMP_NUM_THREADS=2 python benchmarks/prior_real_noise_figure.py [--out docs/prior_real_noise.png]
[--crop 256] [--adapt 60] [--json PATH]``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from pairless import api
from pairless.io import read_image

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
IMAGES = (
    (
        "widefield fluorescence (PN2V Convallaria, one frame)",
        DATA / "fluo/n2v_fluo_samples/pn2v_convallaria_frame0000.tif",
    ),
    ("low-dose TEM (Katsuno et al.)", DATA / "em/tem_lowdose_katsuno/train/0001.tif"),
)


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    top, left = ((s - size) // 2 for s in image.shape)
    return image[top : top + size, left : left + size]


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "prior_real_noise.png"
    )
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--adapt", type=float, default=60.0, help="seconds of adaptation per image")
    parser.add_argument(
        "--json", type=Path, default=Path(__file__).parent / "results" / "prior_real_noise_figure.json"
    )
    args = parser.parse_args()

    denoisers = {
        "BM3D + VST": api.load("bm3d", vst=True),
        "prior (zero-shot)": api.load("prior"),
        f"prior adapted ({args.adapt:g} s)": api.load("prior", adapt=args.adapt),
    }
    report = {"command": "python benchmarks/prior_real_noise_figure.py", "crop": args.crop, "rows": {}}
    fig, axes = plt.subplots(
        len(IMAGES), 1 + len(denoisers), figsize=(3 * (1 + len(denoisers)), 3.2 * len(IMAGES))
    )
    for row, (title, path) in enumerate(IMAGES):
        # each method sees the whole frame (the noise fits need its flat regions); the figure shows a crop
        noisy = read_image(path, axes="YX").data.astype(np.float32)
        panels, seconds = {"input": centre_crop(noisy, args.crop)}, {}
        low, high = np.percentile(panels["input"], (0.5, 99.5))
        for name, denoiser in denoisers.items():
            start = time.perf_counter()
            panels[name] = centre_crop(api.denoise(noisy, denoiser, axes="YX"), args.crop)
            seconds[name] = time.perf_counter() - start
        prior = denoisers["prior (zero-shot)"]
        model = prior.noise_models[0]
        report["rows"][path.name] = {
            "title": title,
            "window": [float(low), float(high)],
            "seconds": seconds,
            "noise model (a, b)": [float(model.a), float(model.b)],
        }
        for col, (name, image) in enumerate(panels.items()):
            ax = axes[row, col]
            ax.imshow(image, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=10)
            if col == 0:
                ax.set_ylabel(title, fontsize=9)
        print(f"{path.name}: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()), flush=True)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out} and {args.json}")


if __name__ == "__main__":
    main()
