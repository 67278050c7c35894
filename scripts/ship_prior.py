"""Put a trained prior into the package (``src/pairless/methods/prior/shipped/``) with its PROVENANCE.md.

The model folder of ``pairless pretrain`` is copied as it is (``config.yaml``, ``weights.safetensors``: the
model-folder loader reads it, nothing is executed) and PROVENANCE.md is written from what the folder and
the given files record: every training run (``--run`` YAML files: command, commit, wall time, machine,
steps), the data and their licences, the weights' SHA-256 and the benchmark rows (``--benchmark`` JSONs).

Usage: ``python scripts/ship_prior.py MODEL_FOLDER --run run1.yaml [--run run2.yaml] --benchmark a.json``
A run file holds ``command``, ``commit``, ``started``, ``wall_s``, ``cpu_s`` (may be absent), ``machine``,
``steps``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import yaml

from pairless.methods.prior.shipped import FOLDER
from pairless.training.modelio import CONFIG_FILE, WEIGHTS_FILE

MAX_BYTES = 20 * 2**20  # what a pip install may carry for one model

DATA = (  # set, folder, images used, source and licence
    (
        "natural",
        "shared/data/natural/bsd400_train",
        "`test_001`–`test_380` (training), `test_381`–`test_400` (checkpoint choice)",
        "180×180 grey crops of the Berkeley Segmentation Dataset train/val images, as in DnCNN's Train400"
        " (github.com/cszn/DnCNN); BSDS is for non-commercial research and educational use",
    ),
    (
        "fluorescence",
        "shared/data/fluo/w2s_ch0",
        "`avg400_gt/001`–`025` (training), `026`–`030` (checkpoint choice)",
        "W2S (Zhou, El Helou et al., ECCVW 2020) channel 0, 400-frame averages, 8-bit copies from"
        " github.com/ND-HowardGroup/Instant-Image-Denoising (GPL-3.0); upstream W2S shows no licence file",
    ),
    (
        "em",
        "shared/data/em/isbi2012/train_image",
        "all 30 slices (training)",
        "ISBI 2012 ssTEM (Cardona et al. 2010), via github.com/zhixuhao/unet (MIT): free for non-commercial"
        " segmentation research; cite TrakEM2 and Cardona et al. 2010",
    ),
)
NEVER_READ = "Never read: BSD68, and the W2S averages of FOVs 031–040 (the evaluation sets)."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--run", type=Path, action="append", default=[], help="a run record (YAML)")
    parser.add_argument("--benchmark", type=Path, action="append", default=[], help="a benchmark JSON")
    args = parser.parse_args()
    weights = (args.model / WEIGHTS_FILE).read_bytes()
    if len(weights) > MAX_BYTES:
        raise SystemExit(
            f"the weights are {len(weights) / 2**20:.1f} MiB, over the 20 MiB a package may ship"
        )
    config = yaml.safe_load((args.model / CONFIG_FILE).read_text())
    if config.get("method") != "prior":
        raise SystemExit(f"{args.model} holds a {config.get('method')!r} model, not a prior")
    staging = FOLDER.with_name("shipped.new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        shutil.copyfile(args.model / name, staging / name)
    runs = [yaml.safe_load(p.read_text()) for p in args.run]
    lines = [
        "# Provenance of the shipped prior",
        "",
        f"weights SHA-256: `{hashlib.sha256(weights).hexdigest()}`",
        "",
        (
            f"Network: `PriorNet` (bias-free DRUNet-lite), widths {config['prior']['widths']},"
            f" {config['prior']['blocks']} residual block per scale; the checkpoint of step"
            f" {config.get('best_step')} (lowest validation loss).  Settings: `config.yaml` beside this file."
        ),
        "",
        "## Training runs (each continues the one before; steps and time add up)",
        "",
        "| # | command | commit | started | steps | wall | CPU | machine |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, run in enumerate(runs, 1):
        lines.append(
            f"| {i} | `{run['command']}` | {run['commit']} | {run['started']} | {run['steps']} | "
            f"{_hours(run['wall_s'])} | {_hours(run.get('cpu_s'))} | {run['machine']} |"
        )
    lines += ["", "## Data", "", "| set | folder | images used | source and licence |", "|---|---|---|---|"]
    lines += [f"| {name} | `{folder}` | {used} | {source} |" for name, folder, used, source in DATA]
    lines += ["", NEVER_READ, "", "## Benchmarks", ""]
    for path in args.benchmark:
        lines += [
            f"`{path.name}`:",
            "",
            "```json",
            json.dumps(json.loads(path.read_text()), indent=1, ensure_ascii=False),
            "```",
            "",
        ]
    (staging / "PROVENANCE.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    old = FOLDER.with_name("shipped.old")
    shutil.rmtree(old, ignore_errors=True)
    if FOLDER.exists():
        FOLDER.rename(old)
    staging.rename(FOLDER)
    shutil.rmtree(old, ignore_errors=True)
    print(f"shipped {args.model} -> {FOLDER}")


def _hours(seconds: float | None) -> str:
    """Hours, or "not recorded" (a run killed before it could write its process time)."""
    return "not recorded" if seconds is None else f"{seconds / 3600:.2f} h"


if __name__ == "__main__":
    main()
