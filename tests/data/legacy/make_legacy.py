"""Write one tiny model folder (and BMZ package where exportable) per method with the CURRENT main code,
plus each one's output on a fixed input under fp32 PyTorch: the fixture that proves the refactor
changes nothing. Run from /work/main at commit 17e51c3."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
from pairless.engines import use_engine
from pairless.modelio import load_denoiser

from pairless import selfsup
from pairless.config import (
    BSNConfig,
    ISCLConfig,
    N2NConfig,
    N2VConfig,
    Ne2NeConfig,
    SupervisedConfig,
    ZSN2NConfig,
)
from pairless.denoiser import denoise_array
from pairless.methods import bsn, n2n, n2v, ne2ne, zsn2n
from pairless.methods.iscl import fit_iscl
from pairless.methods.supervised import fit_supervised

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
yy, xx = np.mgrid[:64, :64]
clean2d = (0.5 + 0.3 * np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.float32)
noisy2d = lambda s: (clean2d + rng.normal(0, 0.1, clean2d.shape)).astype(np.float32)
train2d = [noisy2d(0) for _ in range(3)]
vol = np.stack([clean2d] * 16)[:, :32, :32] + rng.normal(0, 0.1, (16, 32, 32)).astype(np.float32)
test2d = (clean2d[:40, :48] + np.random.default_rng(1).normal(0, 0.1, (40, 48))).astype(np.float32)
test3d = (
    np.stack([clean2d] * 12)[:, :24, :40] + np.random.default_rng(2).normal(0, 0.1, (12, 24, 40))
).astype(np.float32)
big2d = (np.tile(clean2d, (2, 2))[:100, :100] + np.random.default_rng(3).normal(0, 0.1, (100, 100))).astype(
    np.float32
)
big3d = (
    np.stack([np.tile(clean2d, (1, 1))] * 24)[:, :48, :48]
    + np.random.default_rng(4).normal(0, 0.1, (24, 48, 48))
).astype(np.float32)
for k, v in {"input_2d": test2d, "input_3d": test3d, "input_bmz_2d": big2d, "input_bmz_3d": big3d}.items():
    np.save(out / f"{k}.npy", v)
tiny = dict(steps=4, val_every=2, batch_size=2, patch_size=16, depth=1, filters=4, precision="32-true")
jobs = {
    "n2v": (n2v.N2V(N2VConfig(**tiny)), train2d, "YX"),
    "n2v2": (n2v.N2V(N2VConfig(**tiny, n2v2=True)), train2d, "YX"),
    "structn2v": (n2v.N2V(N2VConfig(**tiny, struct_mask="horizontal")), train2d, "YX"),
    "ne2ne": (ne2ne.Ne2Ne(Ne2NeConfig(**tiny)), train2d, "YX"),
    "ne2ne3d": (ne2ne.Ne2Ne(Ne2NeConfig(**{**tiny, "ndim": 3, "patch_depth": 8})), [vol], "ZYX"),
    "bsn": (bsn.BSN(BSNConfig(**{**tiny, "depth": 2}, noise="gaussian", sigma=0.1)), train2d, "YX"),
    "bsn_mean": (bsn.BSN(BSNConfig(**{**tiny, "depth": 2}, noise="none")), train2d, "YX"),
    "zsn2n": (zsn2n.ZSN2N(ZSN2NConfig(**tiny)), train2d, "YX"),
    "n2n": (
        n2n.N2N(N2NConfig(**{**tiny, "ndim": 3, "patch_depth": 8}, context=1, batch_norm=False)),
        [(vol, vol[::-1].copy())],
        "ZYX",
    ),
}
made = {}
for name, (objective, data, axes) in jobs.items():
    selfsup.fit(objective, data, axes=axes, out=out / name, seed=0, progress=False)
    made[name] = axes
iscl_tiny = dict(
    generator_width=4,
    extractor_width=4,
    extractor_depth=2,
    discriminator_width=4,
    batch_size=2,
    steps=2,
    val_every=1,
    val_batches=1,
    precision="32-true",
)
big = [np.tile(t, (2, 2)) for t in train2d]
for norm in ("optimized", "bin"):
    fit_iscl(
        big,
        [np.tile(clean2d, (2, 2))] * 3,
        out=out / f"iscl_{norm}",
        norm=norm,
        config=ISCLConfig(**iscl_tiny),
        seed=0,
        progress=False,
    )
    made[f"iscl_{norm}"] = "YX"
for arch in ("dncnn", "redcnn", "unet"):
    cfg = SupervisedConfig(
        arch=arch,
        channels=4,
        depth=2 if arch != "redcnn" else None,
        patch_size=24 if arch != "unet" else 32,
        batch_size=2,
        steps=3,
        val_every=3,
        val_batches=1,
        precision="32-true",
    )
    fit_supervised(
        big,
        [np.tile(clean2d, (2, 2))] * 3,
        arch=arch,
        out=out / f"supervised_{arch}",
        config=cfg,
        seed=0,
        progress=False,
    )
    made[f"supervised_{arch}"] = "YX"
from pairless.bmz import export_bmz, load_bmz

report = {}
for name, axes in made.items():
    folder = out / name
    for sub in ("checkpoints", "training"):
        shutil.rmtree(folder / sub, ignore_errors=True)
    for f in ("training_log.csv", "loss.png"):
        (folder / f).unlink(missing_ok=True)
    x = test3d if axes == "ZYX" else test2d
    with use_engine("torch-fp32"):
        y = denoise_array(x, load_denoiser(folder), axes=axes)
    np.save(folder / "expected.npy", y)
    entry = {"axes": axes, "bmz": None}
    try:
        pkg = out / f"{name}.bmz.zip"
        xb = big3d if axes == "ZYX" else big2d
        try:
            export_bmz(folder, pkg, authors=["pairless tests"], sample=xb)
        except Exception:  # SliceContextNet does not export to ONNX: the other formats
            export_bmz(
                folder,
                pkg,
                authors=["pairless tests"],
                sample=xb,
                formats=("pytorch_state_dict", "torchscript"),
            )
        with use_engine("torch-fp32"):
            yb = denoise_array(xb, load_bmz(pkg), axes=axes)
        np.save(out / f"{name}.bmz.expected.npy", yb)
        entry["bmz"] = pkg.name
    except Exception as err:
        entry["bmz_error"] = f"{type(err).__name__}: {str(err).splitlines()[0]}"
    report[name] = entry
(out / "manifest.json").write_text(json.dumps(report, indent=2))
print(json.dumps(report, indent=2))
