"""ISCL: networks, presets, the loss graph (what each step trains), learning, and the model folder."""

from typing import get_args

import numpy as np
import pytest
import torch
from torch import nn

from pairless import api
from pairless.cli import main
from pairless.errors import PairlessError
from pairless.methods import registry
from pairless.methods.iscl import denoiser as iscl_denoiser
from pairless.methods.iscl import losses, training
from pairless.methods.iscl.config import ISCLConfig, ISCLNorm, norm_layers
from pairless.nets.iscl import PRESETS, Discriminator, Extractor, Generator, ISCLNets, symmetric_pad
from pairless.nets.norms import BatchInstanceNorm2d, SwitchNorm2d
from pairless.training.modelio import read_model_folder
from pairless.training.patches import UnpairedPatches

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
    assert PRESETS["bin"] == ("batch_instance_iscl",) * 3  # the official BIN: batch moments at inference too
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
    assert norm_layers(cfg) == ("instance", "spectral", "batch_instance_iscl")


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
    return training.ISCLModule(cfg, seed=0)


def _grads(net):
    return [p.grad for p in net.parameters()]


def test_each_loss_reaches_only_the_networks_it_trains():
    nets = _tiny_module().nets
    x, y = _batch()
    losses.discriminator_loss(nets, x, y)["loss_d"].backward()
    assert all(g is None for n in (nets.F, nets.G, nets.H) for g in _grads(n))  # fakes are detached
    assert all(g is not None for g in _grads(nets.D_X) + _grads(nets.D_Y))
    nets.zero_grad(set_to_none=True)
    losses.generator_loss(nets, x, y, lam=30.0)["loss_g"].backward()
    assert all(g is None for g in _grads(nets.H))  # H is a constant in the G step
    assert all(g is not None for g in _grads(nets.F) + _grads(nets.G))
    nets.zero_grad(set_to_none=True)
    losses.extractor_loss(nets, x, y)["loss_h"].backward()
    assert all(g is None for n in (nets.F, nets.G, nets.D_X, nets.D_Y) for g in _grads(n))
    assert all(g is not None for g in _grads(nets.H))


def _losses(module, x, y):
    with torch.no_grad():
        return {
            "d": float(losses.discriminator_loss(module.nets, x, y)["loss_d"]),
            "g": float(losses.generator_loss(module.nets, x, y, lam=30.0)["loss_g"]),
            "h": float(losses.extractor_loss(module.nets, x, y)["loss_h"]),
        }


@pytest.mark.slow
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


@pytest.mark.slow
def test_fit_iscl_round_trip(tmp_path):
    noisy, clean = _images(0, 2, scale=200.0, offset=50.0), _images(1, 2, scale=100.0)
    config = ISCLConfig(**TINY, intensity_mapping="each")
    den = api.fit(
        "iscl", noisy, clean=clean, out=tmp_path / "model", norm="sn", config=config, seed=3, progress=False
    )
    stored, weights = read_model_folder(tmp_path / "model", methods=registry.names(*registry.LEARNED))
    assert stored["method"] == "iscl" and stored["iscl"]["norm"] == "sn"
    assert stored["noisy_range"][0] == pytest.approx(min(float(a.min()) for a in noisy))
    assert all(k.startswith(("F.", "H.")) for k in weights)  # only what inference needs
    assert (tmp_path / "model" / "training" / "training_log.csv").is_file()
    image = torch.from_numpy(noisy[0])[None, None]
    with torch.no_grad():
        out = den(image)
        again = registry.load_model(tmp_path / "model", tile=32, overlap=8)(image)
    assert den.spatial_ndim == 2 and out.shape == image.shape
    lo, hi = stored["clean_range"]
    assert lo - 1e-3 <= float(out.min()) and float(out.max()) <= hi + 1e-3  # clipped, in clean units
    assert torch.isfinite(again).all() and again.shape == image.shape


def test_fit_iscl_rejects_bad_input(tmp_path):
    good = _images(0, 1)
    with pytest.raises(PairlessError, match="2D"):
        api.fit("iscl", [np.zeros((3, 72, 72))], clean=good, out=tmp_path, config=ISCLConfig(**TINY))
    with pytest.raises(PairlessError, match="smaller than"):
        api.fit("iscl", good, clean=[np.zeros((40, 72))], out=tmp_path, config=ISCLConfig(**TINY))
    bad = good[0].copy()
    bad[3, 3] = np.nan
    with pytest.raises(PairlessError, match="NaN"):
        api.fit("iscl", [bad], clean=good, out=tmp_path, config=ISCLConfig(**TINY))
    with pytest.raises(PairlessError, match="norm"):
        api.fit("iscl", good, clean=good, out=tmp_path, norm="batchnorm", config=ISCLConfig(**TINY))
    with pytest.raises(PairlessError, match="profile"):
        api.fit("iscl", good, clean=good, out=tmp_path, profile="slow")


def test_cli_fit_iscl_then_denoise(tmp_path, monkeypatch, capsys):
    import tifffile

    for kind, seed in (("noisy", 0), ("clean", 1)):
        (tmp_path / kind).mkdir()
        for i, image in enumerate(_images(seed, 2)):
            tifffile.imwrite(tmp_path / kind / f"{i}.tif", image)
    monkeypatch.setitem(ISCLConfig.PROFILES, "quick", TINY)  # the CLI trains the quick profile
    model = tmp_path / "model"
    folders = ["--noisy", str(tmp_path / "noisy"), "--clean", str(tmp_path / "clean")]
    args = ["fit", "iscl", *folders, "--out", str(model)]
    assert main([*args, "--norm", "bin"]) == 0
    source = str(tmp_path / "noisy" / "0.tif")
    assert main(["denoise", str(model), source, "--out", str(tmp_path / "den")]) == 0
    assert tifffile.imread(tmp_path / "den" / "0.tif").shape == (72, 80)
    stored, _ = read_model_folder(model, methods=registry.names(*registry.LEARNED))
    assert stored["noisy_range"] == stored["clean_range"]  # by default both sets share the clean map
    assert main([*args, "--norm", "batchnorm"]) == 2
    assert "norm" in capsys.readouterr().err
    missing = ["--noisy", str(tmp_path / "nope"), "--clean", str(tmp_path / "clean")]
    assert main(["fit", "iscl", *missing, "--out", str(tmp_path / "x")]) == 2
    assert "not a folder" in capsys.readouterr().err


def _toy_domains(n, seed, *, size=64, sigma=0.0):
    """Smooth random images (Gaussian-blurred noise, in [0, 1]) plus white noise of sd ``sigma``."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    clean = []
    for _ in range(n):
        field = ndimage.gaussian_filter(rng.standard_normal((size, size)), 4.0, mode="wrap")
        clean.append((0.5 + 0.25 * field / field.std()).clip(0, 1).astype(np.float32))
    noisy = [(c + sigma * rng.standard_normal(c.shape)).astype(np.float32) for c in clean]
    return clean, noisy


@pytest.mark.slow
def test_d_learns_on_a_two_domain_toy_and_iscl_beats_its_input(tmp_path):
    # clean domain: smooth images; noisy domain: *other* smooth images + white noise. D must tell them
    # apart (its hinge loss, 2 at chance, falls well below 2) and the output must be closer to the
    # truth than the input is: the quick profile's optimiser (Adam β1 0.5, warm-up, Lookahead on D
    # and H) at tiny widths, 60 steps, a 4× higher learning rate (hinge by check: 1.67, 1.02, 0.34, 0.10)
    clean, _ = _toy_domains(4, seed=0)
    truth, noisy = _toy_domains(4, seed=1, sigma=0.2)
    cfg = ISCLConfig.for_profile("quick").model_copy(
        update=dict(
            generator_width=4,
            extractor_width=4,
            extractor_depth=4,
            discriminator_width=4,
            batch_size=4,
            steps=60,
            warmup_steps=7,
            val_every=15,
            val_batches=1,
            precision="32-true",
            lr=2e-3,
            d_lr_scale=2.0,
        )
    )
    den = api.fit(
        "iscl",
        noisy,
        clean=clean,
        out=tmp_path / "m",
        norm="optimized",
        config=cfg,
        seed=0,
        progress=False,
        options={"monitor_pairs": (noisy[:1], truth[:1])},
    )
    import csv

    with open(tmp_path / "m" / "training" / "training_log.csv") as f:
        log = list(csv.DictReader(f))
    hinge = [float(r["adversarial_d"]) for r in log]
    assert hinge[-1] < 1.0, hinge  # well below chance
    assert {"val_psnr_input", "val_psnr_f", "val_psnr_h", "val_psnr_mix", "boosting"} <= set(log[-1])
    from pairless.metrics.image import psnr

    x = torch.from_numpy(np.stack(noisy))[:, None]
    with torch.no_grad():
        out = den(x)[:, 0].numpy()
    before = np.mean([psnr(n, t, data_range=1.0) for n, t in zip(noisy, truth)])
    after = np.mean([psnr(o, t, data_range=1.0) for o, t in zip(out, truth)])
    assert after > before + 2.0, (before, after)  # 14.1 → 22.0 dB when written


def _buffers(net):
    return {k: v.clone() for k, v in net.named_buffers()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("norm", ["bn", "optimized"])
def test_no_gradient_passes_run_in_eval_mode_and_keep_running_statistics(norm):
    # the official code calls every network a step does not train with training=False: F's batch
    # norm must not fold generated batches into its running statistics, D's spectral norm must not
    # advance its power iteration in the G step; the trained networks' statistics must move (else
    # this test could not fail)
    nets = _tiny_module(norm).nets
    nets.train()
    x, y = _batch()
    steps = (
        (lambda: losses.discriminator_loss(nets, x, y), ("F", "G", "H"), ("D_X", "D_Y")),
        (lambda: losses.generator_loss(nets, x, y, lam=30.0), ("H", "D_X", "D_Y"), ("F", "G")),
        (lambda: losses.extractor_loss(nets, x, y), ("F", "G"), ("H",)),
    )
    for loss, constant, trained in steps:
        before = {name: _buffers(getattr(nets, name)) for name in ("F", "G", "H", "D_X", "D_Y")}
        loss()
        for name in constant:
            assert _same(before[name], _buffers(getattr(nets, name))), (norm, name)
            assert getattr(nets, name).training  # the mode is restored afterwards
        for name in trained:
            if before[name]:  # networks without buffers (instance norm) have nothing to update
                assert not _same(before[name], _buffers(getattr(nets, name))), (norm, name)


def test_bin_preset_at_batch_1_equals_instance_norm_networks():
    # with the official BIN a whole test image (batch 1) is normalised like InstanceNorm: a bin F
    # and an instance-norm F with the same weights agree on one image, whatever the gates are
    widths = dict(generator_width=4, extractor_width=4, extractor_depth=4, discriminator_width=4)
    bin_nets = ISCLNets(PRESETS["bin"], **widths)
    in_nets = ISCLNets(PRESETS["in"], **widths)
    assert all(m.running_stats is False for m in bin_nets.modules() if isinstance(m, BatchInstanceNorm2d))
    g = torch.Generator().manual_seed(0)
    for name in ("F", "H"):
        source, target = getattr(bin_nets, name), getattr(in_nets, name)
        for m in source.modules():
            if isinstance(m, BatchInstanceNorm2d):
                with torch.no_grad():
                    m.rho.uniform_(0, 1, generator=g)
                    m.weight.uniform_(0.5, 1.5, generator=g)
                    m.bias.normal_(generator=g)
        state = {
            k: v.reshape(target.state_dict()[k].shape)
            for k, v in source.state_dict().items()
            if k in target.state_dict()
        }
        target.load_state_dict(state, strict=True)
        for m in target.modules():
            if isinstance(m, nn.InstanceNorm2d):
                m.eps = 1e-7  # the official BIN's ε, so that only the normalisation itself is compared
        one = torch.rand(1, 1, 48, 56, generator=g)
        assert torch.allclose(source.eval()(one), target.eval()(one), atol=1e-4), name
        two = torch.cat([one, torch.rand(1, 1, 48, 56, generator=g)])
        assert not torch.allclose(source(two)[:1], target(one), atol=1e-3)  # batch moments: a 2-batch differs


def test_lookahead_follows_the_tfa_rule():
    # fast SGD on f(p) = p²/2 (gradient p): every k steps slow += α(fast − slow), fast = slow
    from pairless.training.optim import Lookahead

    p = nn.Parameter(torch.tensor([4.0]))
    opt = Lookahead(torch.optim.SGD([p], lr=0.25), sync_period=3, slow_step_size=0.5)
    fast, slow = 4.0, 4.0
    for step in range(1, 10):
        opt.zero_grad()
        (p**2 / 2).sum().backward()
        opt.step()
        fast -= 0.25 * fast
        if step % 3 == 0:
            slow += 0.5 * (fast - slow)
            fast = slow
        assert float(p.detach()) == pytest.approx(fast), step
    state = opt.state_dict()
    again = Lookahead(torch.optim.SGD([nn.Parameter(torch.tensor([0.0]))], lr=0.25), sync_period=3)
    again.load_state_dict(state)
    assert again.fast_steps == 9 and float(again.slow[0]) == pytest.approx(slow)
    with pytest.raises(ValueError, match="slow_step_size"):
        Lookahead(torch.optim.SGD([p], lr=0.1), slow_step_size=0.0)


def test_d_and_h_use_lookahead_g_does_not_and_d_lr_scales():
    from pairless.training.optim import Lookahead

    module = _tiny_module(optimizer="adam", lr=2e-4, d_lr_scale=2.0, betas=(0.5, 0.999))
    (opt_d, opt_g, opt_h), _ = module.configure_optimizers()
    assert isinstance(opt_d, Lookahead) and isinstance(opt_h, Lookahead) and not isinstance(opt_g, Lookahead)
    assert isinstance(opt_d.base, torch.optim.Adam) and opt_g.param_groups[0]["betas"] == (0.5, 0.999)
    assert opt_d.param_groups[0]["lr"] == pytest.approx(4e-4) and opt_g.param_groups[0][
        "lr"
    ] == pytest.approx(2e-4)
    (opt_d, _, opt_h), _ = _tiny_module(lookahead_period=0).configure_optimizers()
    assert isinstance(opt_d, torch.optim.RAdam) and isinstance(opt_h, torch.optim.RAdam)


def test_learning_rate_warms_up_then_holds_then_decays():
    cfg = ISCLConfig(steps=100, lr=1e-3, min_lr=1e-5, warmup_steps=10, decay_start=0.5)
    factor = training.lr_factor(cfg)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(30) == pytest.approx(1.0) and factor(50) == pytest.approx(1.0)
    assert factor(75) == pytest.approx(1 + (0.01 - 1) * 0.5)
    assert factor(100) == pytest.approx(0.01)


def test_monitors_warn_and_stop_when_d_is_inert_or_f_is_the_identity():
    from types import SimpleNamespace

    def run(**values):
        module = _tiny_module(steps=100, val_every=10)
        module._trainer = SimpleNamespace(should_stop=False)
        logs = {k: torch.tensor(v) for k, v in values.items()}
        stopped_at = None
        with pytest.warns(UserWarning) as caught:
            for step in range(1, 101):
                module.watch(step, logs)
                if module._trainer.should_stop:
                    stopped_at = step
                    break
        return [str(w.message) for w in caught], stopped_at

    messages, stopped_at = run(adversarial_d=1.98, f_residual=0.1, h_norm=0.1)
    assert "discriminators are not learning" in messages[0] and "1.98" in messages[0]
    assert stopped_at == 50 and "training stopped at step 50" in messages[-1]
    messages, stopped_at = run(adversarial_d=0.5, f_residual=0.001, h_norm=0.002)
    assert "collapsed to the identity" in messages[0] and stopped_at == 40  # two checks in a row
    assert training.diagnose(200, adversarial_d=0.6, f_residual=0.05, h_norm=0.04) == {}


def _instance_denoiser(**kwargs):
    norms = norm_layers(ISCLConfig(norm="optimized"))
    output = iscl_denoiser.ISCLOutput(Generator(norms.generator, 4), Extractor(norms.extractor, 4, 4))
    init = torch.Generator().manual_seed(0)
    for p in output.parameters():
        with torch.no_grad():
            p.add_(0.1 * torch.randn(p.shape, generator=init))
    return iscl_denoiser.ISCLDenoiser(
        output, noisy_range=(-1.0, 1.0), clean_range=(-1.0, 1.0), tile=32, overlap=8, **kwargs
    )


def test_inference_runs_the_whole_image_and_tiles_only_what_does_not_fit():
    image = torch.rand(2, 1, 72, 88, generator=torch.Generator().manual_seed(1)) * 2 - 1
    den = _instance_denoiser()
    with torch.no_grad():
        whole = torch.cat([den.output.eval()(image[i : i + 1]) for i in range(2)])  # each image alone
        out = den(image)
    assert (
        out - whole
    ).abs().mean() < 0.01  # only bf16 rounding (inference runs in bf16, the reference in fp32)
    with torch.no_grad():
        assert (
            _instance_denoiser(tta=True)(image).shape == image.shape
        )  # 90° turns of a non-square whole image
    small = _instance_denoiser(max_pixels=32 * 32)
    with pytest.warns(UserWarning, match="whole-image limit"), torch.no_grad():
        tiled = small(image)
    assert (tiled - whole).abs().mean() > 0.05  # per-tile statistics differ, which is why it warns
    local = iscl_denoiser.load(
        {"iscl": ISCLConfig(norm="bn", **TINY).model_dump(), "noisy_range": [0, 1], "clean_range": [0, 1]},
        {
            k: v
            for k, v in (
                iscl_denoiser.ISCLOutput(Generator("batch", 4), Extractor("batch", 4, 4)).state_dict().items()
            )
        },
    )
    assert local.whole_image is False and _instance_denoiser().whole_image is True


def test_flips_augmentation_keeps_the_streak_direction():
    streaks = np.repeat(np.linspace(-1, 1, 80, dtype=np.float32)[:, None], 80, axis=1)  # constant rows
    for augmentation, turned in (("flips", False), ("dihedral", True)):
        data = UnpairedPatches([streaks], [streaks], patch=64, length=32, seed=0, augmentation=augmentation)
        rows_constant = [bool((x[0].std(dim=1) < 1e-6).all()) for x, _ in (data[i] for i in range(32))]
        assert all(rows_constant) != turned, augmentation
