"""ISCL: networks, presets, the loss graph (what each step trains), learning, and the model folder."""

from typing import get_args

import numpy as np
import pytest
import torch
from torch import nn

from pairless.cli import main
from pairless.config import ISCLConfig, ISCLNorm
from pairless.errors import PairlessError
from pairless.methods import iscl
from pairless.modelio import load_denoiser, read_model_folder
from pairless.nets.iscl import PRESETS, Discriminator, Extractor, Generator, ISCLNets, symmetric_pad
from pairless.nets.norms import BatchInstanceNorm2d, SwitchNorm2d

TINY = dict(
    generator_width=4,
    extractor_width=4,
    extractor_depth=4,
    discriminator_width=4,
    batch_size=2,
    steps=3,
    val_every=2,
    val_batches=1,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(seed=0, n=2, size=64):
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(n, 1, size, size, generator=g) * 1.6 - 0.8  # "clean"
    x = torch.rand(n, 1, size, size, generator=g) * 1.6 - 0.8
    x = x + 0.2 * torch.randn(n, 1, size, size, generator=g)
    return x.clamp(-1, 1), y


def test_presets_are_seed_002_table_2():
    assert set(PRESETS) == set(get_args(ISCLNorm))
    assert PRESETS["optimized"] == ("instance", "spectral", "switchable")
    assert PRESETS["bin"] == ("batch_instance",) * 3
    rows = {"bn": "batch", "ln": "layer", "gn": "group", "sn": "switchable", "in": "instance"}
    for name, layer in rows.items():
        assert PRESETS[name] == (layer,) * 3


def test_optimized_networks_carry_their_norms():
    widths = dict(generator_width=4, extractor_width=4, extractor_depth=4, discriminator_width=4)
    nets = ISCLNets(PRESETS["optimized"], **widths)
    assert any(isinstance(m, nn.InstanceNorm2d) for m in nets.F.modules())
    assert any(isinstance(m, SwitchNorm2d) for m in nets.H.modules())
    convs = [m for m in nets.D_X.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 6 and all(hasattr(c, "parametrizations") for c in convs)
    assert not any(isinstance(m, (nn.InstanceNorm2d, SwitchNorm2d, nn.GroupNorm)) for m in nets.D_X.modules())
    original = ISCLNets(PRESETS["bin"], **widths)
    for net in (original.F, original.H, original.D_Y):
        assert any(isinstance(m, BatchInstanceNorm2d) for m in net.modules())


def test_overrides_replace_one_network_norm():
    cfg = ISCLConfig(norm="optimized", extractor_norm="batch_instance_iscl")
    assert iscl.norm_layers(cfg) == ("instance", "spectral", "batch_instance_iscl")


def test_symmetric_pad_is_numpy_symmetric():
    x = torch.arange(20.0).reshape(1, 1, 4, 5)
    for p in (1, 3):
        expected = np.pad(x.numpy()[0, 0], p, mode="symmetric")
        assert np.array_equal(symmetric_pad(x, p).numpy()[0, 0], expected)


@pytest.mark.parametrize("size", [(64, 64), (37, 31), (50, 66), (8, 9)])
def test_generator_and_extractor_keep_the_size(size):
    x = torch.rand(2, 1, *size)
    assert Generator("instance", width=4)(x).shape == x.shape
    assert Extractor("switchable", width=4, depth=4)(x).shape == x.shape


def test_discriminator_scores_a_64_patch_with_one_logit():
    assert Discriminator("spectral", width=4)(torch.rand(3, 1, 64, 64)).shape == (3, 1, 1, 1)


def _tiny_module(norm="optimized", **overrides):
    cfg = ISCLConfig(norm=norm, **{**TINY, **overrides})
    return iscl.ISCLModule(cfg, seed=0)


def _grads(net):
    return [p.grad for p in net.parameters()]


def test_each_loss_reaches_only_the_networks_it_trains():
    nets = _tiny_module().nets
    x, y = _batch()
    iscl.discriminator_loss(nets, x, y)["loss_d"].backward()
    assert all(g is None for n in (nets.F, nets.G, nets.H) for g in _grads(n))  # fakes are detached
    assert all(g is not None for g in _grads(nets.D_X) + _grads(nets.D_Y))
    nets.zero_grad(set_to_none=True)
    iscl.generator_loss(nets, x, y, lam=30.0)["loss_g"].backward()
    assert all(g is None for g in _grads(nets.H))  # H is a constant in the G step
    assert all(g is not None for g in _grads(nets.F) + _grads(nets.G))
    nets.zero_grad(set_to_none=True)
    iscl.extractor_loss(nets, x, y)["loss_h"].backward()
    assert all(g is None for n in (nets.F, nets.G, nets.D_X, nets.D_Y) for g in _grads(n))
    assert all(g is not None for g in _grads(nets.H))


def _losses(module, x, y):
    with torch.no_grad():
        return {
            "d": float(iscl.discriminator_loss(module.nets, x, y)["loss_d"]),
            "g": float(iscl.generator_loss(module.nets, x, y, lam=30.0)["loss_g"]),
            "h": float(iscl.extractor_loss(module.nets, x, y)["loss_h"]),
        }


@pytest.mark.parametrize("norm", ["optimized", "bin"])
def test_iterations_lower_each_loss_on_a_fixed_batch(norm):
    module = _tiny_module(norm, lr=3e-3)
    optimizers, _ = module.configure_optimizers()
    x, y = _batch(seed=1)
    before = _losses(module, x, y)
    for _ in range(8):
        logs = module.iterate(x, y, optimizers)
    after = _losses(module, x, y)
    for key in ("d", "g", "h"):
        assert after[key] < before[key], (key, before, after)
    monitors = {"h_norm", "f_residual", "boosting", "cycle", "bypass", "pseudo_noise", "noise_consistency"}
    assert monitors <= set(logs)


def test_learning_rate_falls_linearly_to_min_lr():
    module = _tiny_module(steps=10, lr=1e-4, min_lr=1e-7)
    optimizers, schedulers = module.configure_optimizers()
    seen = []
    for _ in range(10):
        for opt in optimizers:
            opt.step()
        for s in schedulers:
            s.step()
        seen.append(optimizers[0].param_groups[0]["lr"])
    assert seen[4] == pytest.approx(1e-4 + (1e-7 - 1e-4) * 5 / 10)
    assert seen[-1] == pytest.approx(1e-7)


def _images(seed, n, shape=(72, 80), scale=1.0, offset=0.0):
    rng = np.random.default_rng(seed)
    return [(rng.random(shape) * scale + offset).astype(np.float32) for _ in range(n)]


def test_fit_iscl_round_trip(tmp_path):
    noisy, clean = _images(0, 2, scale=200.0, offset=50.0), _images(1, 2, scale=100.0)
    config = ISCLConfig(**TINY, intensity_mapping="each")
    den = iscl.fit_iscl(
        noisy, clean, out=tmp_path / "model", norm="sn", config=config, seed=3, progress=False
    )
    stored, weights = read_model_folder(tmp_path / "model")
    assert stored["method"] == "iscl" and stored["iscl"]["norm"] == "sn"
    assert stored["noisy_range"][0] == pytest.approx(min(float(a.min()) for a in noisy))
    assert all(k.startswith(("F.", "H.")) for k in weights)  # only what inference needs
    assert (tmp_path / "model" / "training" / "training_log.csv").is_file()
    image = torch.from_numpy(noisy[0])[None, None]
    with torch.no_grad():
        out = den(image)
        again = load_denoiser(tmp_path / "model", tile=32, overlap=8)(image)
    assert den.spatial_ndim == 2 and out.shape == image.shape
    lo, hi = stored["clean_range"]
    assert lo - 1e-3 <= float(out.min()) and float(out.max()) <= hi + 1e-3  # clipped, in clean units
    assert torch.isfinite(again).all() and again.shape == image.shape


def test_fit_iscl_rejects_bad_input(tmp_path):
    good = _images(0, 1)
    with pytest.raises(PairlessError, match="2D"):
        iscl.fit_iscl([np.zeros((3, 72, 72))], good, out=tmp_path, config=ISCLConfig(**TINY))
    with pytest.raises(PairlessError, match="smaller than"):
        iscl.fit_iscl(good, [np.zeros((40, 72))], out=tmp_path, config=ISCLConfig(**TINY))
    bad = good[0].copy()
    bad[3, 3] = np.nan
    with pytest.raises(PairlessError, match="NaN"):
        iscl.fit_iscl([bad], good, out=tmp_path, config=ISCLConfig(**TINY))
    with pytest.raises(PairlessError, match="norm"):
        iscl.fit_iscl(good, good, out=tmp_path, norm="batchnorm", config=ISCLConfig(**TINY))
    with pytest.raises(PairlessError, match="profile"):
        iscl.fit_iscl(good, good, out=tmp_path, profile="slow")


def test_cli_fit_iscl_then_denoise(tmp_path, monkeypatch, capsys):
    import tifffile

    for kind, seed in (("noisy", 0), ("clean", 1)):
        (tmp_path / kind).mkdir()
        for i, image in enumerate(_images(seed, 2)):
            tifffile.imwrite(tmp_path / kind / f"{i}.tif", image)
    monkeypatch.setattr(iscl, "profile_config", lambda profile: ISCLConfig(**TINY))
    model = tmp_path / "model"
    folders = ["--noisy", str(tmp_path / "noisy"), "--clean", str(tmp_path / "clean")]
    args = ["fit", "iscl", *folders, "--out", str(model)]
    assert main([*args, "--norm", "bin"]) == 0
    source = str(tmp_path / "noisy" / "0.tif")
    assert main(["denoise", str(model), source, "--out", str(tmp_path / "den")]) == 0
    assert tifffile.imread(tmp_path / "den" / "0.tif").shape == (72, 80)
    stored, _ = read_model_folder(model)
    assert stored["noisy_range"] == stored["clean_range"]  # by default both sets share the clean map
    assert main([*args, "--norm", "batchnorm"]) == 2
    assert "norm" in capsys.readouterr().err
    missing = ["--noisy", str(tmp_path / "nope"), "--clean", str(tmp_path / "clean")]
    assert main(["fit", "iscl", *missing, "--out", str(tmp_path / "x")]) == 2
    assert "not a folder" in capsys.readouterr().err
