"""N2V training end to end on tiny images: the blind spot, denoising, best checkpoint, resume."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from pairless import api
from pairless.config import read_yaml
from pairless.methods.n2v import N2VConfig
from pairless.methods.registry import load_model

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = dict(patch_size=32, batch_size=8, filters=8, precision="32-true", mask_fraction=0.01)


def _log(folder: Path) -> list[dict]:
    with open(folder / "training_log.csv") as fh:
        return list(csv.DictReader(fh))


def _smooth(shape, rng):
    y, x = np.mgrid[: shape[0], : shape[1]] / shape[0]
    return (np.sin(6 * x) * np.cos(4 * y) + 0.5 * np.sin(9 * (x + y))).astype(np.float32)


@pytest.mark.slow
def test_on_white_noise_the_blind_spot_leaks_nothing(tmp_path):
    rng = np.random.default_rng(0)
    noise = rng.normal(3.0, 1.0, (4, 64, 64)).astype(np.float32)
    config = N2VConfig(**TINY, steps=120, val_every=40, lr=4e-3)
    denoiser = api.fit("n2v", [noise], axes="SYX", out=tmp_path / "m", config=config, progress=False)
    out = denoiser(torch.from_numpy(noise[:1, None]))
    # an identity-like net would return std 1; a blind-spot net can only predict the mean
    assert out.std().item() < 0.3
    assert abs(out.mean().item() - 3.0) < 0.3


@pytest.mark.slow
def test_denoises_a_smooth_image_and_keeps_the_best_checkpoint(tmp_path):
    rng = np.random.default_rng(1)
    clean = _smooth((96, 96), rng)
    noisy = np.stack([clean + rng.normal(0, 0.3, clean.shape).astype(np.float32) for _ in range(4)])
    config = N2VConfig(**TINY, steps=160, val_every=40, lr=4e-3)
    folder = tmp_path / "m"
    api.fit("n2v", [noisy], axes="SYX", out=folder, config=config, progress=False)
    denoiser = load_model(folder)
    out = denoiser(torch.from_numpy(noisy[:, None]))[:, 0].numpy()

    def psnr(x):
        return 10 * np.log10(np.ptp(clean) ** 2 / np.mean((x - clean) ** 2))

    assert psnr(out) > psnr(noisy[0]) + 5
    rows = _log(folder)
    assert [int(r["step"]) for r in rows] == [40, 80, 120, 160]
    best = min(rows, key=lambda r: float(r["val_loss"]))
    assert read_yaml(folder / "config.yaml")["best_step"] == int(best["step"])
    assert (folder / "loss.png").stat().st_size > 0
    assert not Path("lightning_logs").exists()


class _Crash(Callback):
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == 13:
            raise RuntimeError("simulated crash")


@pytest.mark.slow
def test_resume_after_a_crash_reaches_the_same_number_of_steps(tmp_path, monkeypatch):
    import lightning as L

    rng = np.random.default_rng(2)
    image = rng.normal(0, 1, (96, 96)).astype(np.float32)
    config = N2VConfig(**TINY, steps=25, val_every=5)
    folder = tmp_path / "m"
    original = L.Trainer.__init__

    def crashing(self, *args, callbacks=(), **kwargs):
        original(self, *args, callbacks=[*callbacks, _Crash()], **kwargs)

    monkeypatch.setattr(L.Trainer, "__init__", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        api.fit("n2v", [image], axes="YX", out=folder, config=config, progress=False)
    monkeypatch.setattr(L.Trainer, "__init__", original)
    assert torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 10

    api.fit("n2v", [image], axes="YX", out=folder, config=config, progress=False)  # resume=None: continues
    assert torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 25
    assert [int(r["step"]) for r in _log(folder)] == [5, 10, 15, 20, 25]


@pytest.mark.slow
def test_a_damaged_last_checkpoint_falls_back_with_a_warning(tmp_path):
    rng = np.random.default_rng(3)
    image = rng.normal(0, 1, (96, 96)).astype(np.float32)
    folder = tmp_path / "m"
    api.fit(
        "n2v", [image], axes="YX", out=folder, config=N2VConfig(**TINY, steps=10, val_every=5), progress=False
    )
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="damaged"):
        api.fit(
            "n2v",
            [image],
            axes="YX",
            out=folder,
            config=N2VConfig(**TINY, steps=15, val_every=5),
            progress=False,
        )
    assert torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 15


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path):
    folder = tmp_path / "m"
    np.save(tmp_path / "img.npy", np.random.default_rng(4).normal(0, 1, (96, 96)).astype(np.float32))
    script = (
        "import numpy as np; from pathlib import Path; from pairless import api;"
        "from pairless.methods.n2v import N2VConfig;"
        f"api.fit('n2v', [np.load({str(tmp_path / 'img.npy')!r})], axes='YX', out=Path({str(folder)!r}),"
        f"config=N2VConfig(**{TINY!r}, steps=400, val_every=5), progress=False)"
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    last = folder / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while time.time() < deadline and not (
        last.exists() and torch.load(last, weights_only=True)["global_step"] >= 10
    ):
        time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    step = torch.load(last, weights_only=True)["global_step"]
    assert 10 <= step < 400
    api.fit(
        "n2v",
        [np.load(tmp_path / "img.npy")],
        axes="YX",
        out=folder,
        config=N2VConfig(**TINY, steps=step + 10, val_every=5),
        progress=False,
        resume=True,
    )
    assert torch.load(last, weights_only=True)["global_step"] == step + 10


@pytest.mark.slow
def test_same_seed_same_model(tmp_path):
    image = np.random.default_rng(5).normal(0, 1, (96, 96)).astype(np.float32)
    config = N2VConfig(**TINY, steps=4, val_every=2)
    runs = [
        api.fit("n2v", [image], axes="YX", out=tmp_path / f"m{i}", config=config, progress=False, seed=7)
        for i in range(2)
    ]
    for a, b in zip(runs[0].state_dict().values(), runs[1].state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize(
    "axes, shape, settings",
    [
        ("ZYX", (12, 40, 40), {"ndim": 3, "patch_depth": 8, "patch_size": 16, "n2v2": True}),
        ("YX", (80, 80), {"struct_mask": "vertical"}),
    ],
)
def test_variants_train_and_predict(tmp_path, axes, shape, settings):
    image = np.random.default_rng(6).normal(0, 1, shape).astype(np.float32)
    config = N2VConfig(**{**TINY, **settings}, steps=4, val_every=2)
    denoiser = api.fit("n2v", [image], axes=axes, out=tmp_path / "m", config=config, progress=False)
    assert denoiser.spatial_ndim == config.ndim
    from pairless.denoiser import denoise_array

    assert denoise_array(image, denoiser, axes=axes).shape == shape


@pytest.mark.slow
def test_cli_fit_n2v(tmp_path, capsys):
    import yaml

    from pairless.cli import main

    np.save(tmp_path / "img.npy", np.random.default_rng(7).normal(0, 1, (2, 64, 64)).astype(np.float32))
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump({**TINY, "steps": 2, "val_every": 2}))
    args = ["fit", "n2v", str(tmp_path / "img.npy"), "--axes", "SYX", "--out", str(tmp_path / "m")]
    assert main([*args, "--config", str(tmp_path / "cfg.yaml"), "--n2v2"]) == 0
    assert read_yaml(tmp_path / "m" / "config.yaml")["n2v2"] is True
    assert main([*args, "--profile", "fast"]) == 2
    assert "unknown profile" in capsys.readouterr().err
    assert main([*args, "--3d"]) == 2  # SYX has no Z
