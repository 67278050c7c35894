"""Noise2Noise on pairs of independent acquisitions, its 2.5D network, model selection without the truth."""

import numpy as np
import pytest
import torch

from pairless import api
from pairless.cli import main
from pairless.errors import PairlessError
from pairless.methods.n2n import N2N, N2NConfig
from pairless.methods.registry import load_model
from pairless.nets.context import SliceContextNet
from pairless.training import selfsup

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(
    patch_size=32, batch_size=4, filters=8, precision="32-true", val_every=40, depth=2, steps=120, lr=4e-3
)


def _smooth(n=64, depth=None):
    y, x = np.mgrid[:n, :n] / n
    plane = (np.sin(6 * x) * np.cos(4 * y) + 0.5 * np.sin(9 * (x + y))).astype(np.float32)
    if depth is None:
        return plane
    z = np.linspace(0, 1, depth)[:, None, None]
    return (plane[None] * np.cos(2 * z) + 0.3 * z).astype(np.float32)


def _psnr(clean, x):
    return 10 * np.log10(np.ptp(clean) ** 2 / np.mean((x - clean) ** 2))


@pytest.mark.slow
def test_trained_on_pairs_of_pure_noise_it_outputs_about_the_mean(tmp_path):
    rng = np.random.default_rng(0)
    a, b = (rng.normal(3.0, 1.0, (4, 64, 64)).astype(np.float32) for _ in range(2))
    denoiser = api.fit(
        "n2n", [(a, b)], axes="SYX", out=tmp_path / "m", config=N2NConfig(**TINY), progress=False
    )
    out = denoiser(torch.from_numpy(a[:1, None]))
    assert out.std().item() < 0.35  # the identity would give back std 1
    assert abs(out.mean().item() - 3.0) < 0.3


@pytest.mark.slow
def test_it_beats_its_noisy_input_and_the_folder_reloads(tmp_path):
    rng = np.random.default_rng(1)
    clean = np.stack([_smooth()] * 4)
    a, b = (clean + rng.normal(0, 0.3, clean.shape).astype(np.float32) for _ in range(2))
    api.fit("n2n", [(a, b)], axes="SYX", out=tmp_path / "m", config=N2NConfig(**TINY), progress=False)
    out = load_model(tmp_path / "m")(torch.from_numpy(a[:, None]))[:, 0].numpy()
    assert _psnr(clean, out) > _psnr(clean, a) + 4


def test_patches_of_a_pair_are_cut_at_the_same_place_and_turned_together():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(3, 40, 48)).astype(np.float32)
    stacks = selfsup.paired_stacks([(a, a + 10)], axes="SYX", ndim=2)
    sampler = selfsup.PatchSampler(stacks, (16, 16), val_fraction=0.1, max_val=4, seed=0)
    for batch in (sampler.draw(20, rng, rotate=True), sampler.validation_patches()):
        assert batch.shape[1] == 2
        np.testing.assert_allclose(batch[:, 1], batch[:, 0] + 10, atol=1e-5)


def test_the_context_network_sees_only_its_neighbouring_slices():
    torch.manual_seed(0)
    net = SliceContextNet(context=2, depth=2, filters=4).eval()  # batch statistics would couple all slices
    x = torch.randn(1, 1, 9, 16, 16, requires_grad=True)
    (grad,) = torch.autograd.grad(net(x)[0, 0, 4].sum(), x)
    seen = grad[0, 0].abs().sum(dim=(1, 2)) > 0
    assert seen.tolist() == [False, False, True, True, True, True, True, False, False]


@pytest.mark.slow
def test_the_2_5d_network_uses_its_neighbours_where_noise_is_independent_per_slice(tmp_path):
    # the same signal on every plane, independent noise: neighbouring planes carry information a 2D net lacks
    rng = np.random.default_rng(3)
    clean = np.stack([_smooth(48)] * 16)
    a, b = (clean + rng.normal(0, 1.0, clean.shape).astype(np.float32) for _ in range(2))
    common = {**TINY, "ndim": 3, "patch_depth": 8, "steps": 150}
    scores = {}
    for name, extra in (("2d", {"ndim": 2}), ("2.5d", {"context": 2, "batch_norm": False})):
        config = N2NConfig(**{**common, **extra})
        axes = "ZYX" if config.ndim == 3 else "SYX"
        den = api.fit("n2n", [(a, b)], axes=axes, out=tmp_path / name, config=config, progress=False)
        x = torch.from_numpy(a[None, None] if config.ndim == 3 else a[:, None])
        scores[name] = _psnr(clean, den(x).numpy().reshape(clean.shape))
    assert scores["2.5d"] > scores["2d"] + 1.5  # measured: +3.1 dB


def test_hot_patches_find_every_bright_structure_as_often_as_any_other():
    rng = np.random.default_rng(4)
    image = rng.normal(0, 0.1, (2, 96, 96)).astype(np.float32)
    image[0, 10:20, 10:20] += 5  # a large structure ...
    image[1, 40:44, 40:44] += 5  # ... and a small one, together < 1 % of the pixels
    regions = selfsup.hot_spots(image, 2)
    assert len(regions) == 2
    sampler = selfsup.PatchSampler([image], (16, 16), val_fraction=0.05, max_val=2, seed=0, hot_fraction=1.0)
    batch = sampler.draw(200, rng, rotate=False)
    hits_small = np.mean([(p[0] > 2.5).sum() in range(1, 17) for p in batch])
    assert (
        0.35 < hits_small < 0.65
    )  # half of the hot patches hold the 16-pixel structure, a seventh of the bright area


def test_fit_n2n_cli_takes_pairs_and_refuses_odd_or_mismatched_inputs(tmp_path, capsys):
    import tifffile

    rng = np.random.default_rng(5)
    clean = np.stack([_smooth()] * 2)
    paths = []
    for k in range(2):
        paths.append(tmp_path / f"half{k}.tif")
        tifffile.imwrite(paths[-1], clean + rng.normal(0, 0.3, clean.shape).astype(np.float32))
    config = tmp_path / "tiny.yaml"
    config.write_text("".join(f"{k}: {v}\n" for k, v in {**TINY, "steps": 20, "val_every": 10}.items()))
    out = tmp_path / "model"
    assert (
        main(
            [
                "fit",
                "n2n",
                "--pairs",
                str(paths[0]),
                str(paths[1]),
                "--axes",
                "SYX",
                "--config",
                str(config),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert (out / "weights.safetensors").is_file() and "1 pair(s)" in capsys.readouterr().out
    assert (
        main(["fit", "n2n", "--pairs", str(paths[0]), "--axes", "SYX", "--out", str(tmp_path / "odd")]) == 2
    )
    assert "pairs" in capsys.readouterr().err and not (tmp_path / "odd").exists()
    small = tmp_path / "small.tif"
    tifffile.imwrite(small, clean[:, :32, :32])
    assert (
        main(
            [
                "fit",
                "n2n",
                "--pairs",
                str(paths[0]),
                str(small),
                "--axes",
                "SYX",
                "--out",
                str(tmp_path / "mis"),
            ]
        )
        == 2
    )
    assert "differ in shape" in capsys.readouterr().err and not (tmp_path / "mis").exists()


def test_context_needs_a_volume():
    with pytest.raises(PairlessError, match="ndim 3"):
        N2N(N2NConfig(context=2)).make_net()


@pytest.mark.slow
def test_the_held_out_pair_loss_ranks_checkpoints_as_their_error_against_the_true_activity(tmp_path):
    """Model selection without the truth (eq. 1 of methods/n2n.py) on a small simulated PET study."""
    import copy

    import lightning as L
    from scipy import stats

    from pairless.experiments.pet import _phantom_box
    from pairless.sim.pet import simulate_pet

    study = simulate_pet(slices=8, minutes=(2.0, 10.0), seed=1, splits=2)
    a, b = study.parts[2.0]
    box = _phantom_box(study.images[2.0])
    a, b, truth = a[box], b[box], study.truth[box]
    body = truth > 0
    mean, std = selfsup.mean_std(selfsup.paired_stacks([(a, b)], axes="SYX", ndim=2))
    scores = []

    class Score(L.Callback):
        def on_validation_end(self, trainer, module):
            denoiser = selfsup.NetDenoiser(
                copy.deepcopy(module.net), normalisation={"mean": mean, "std": std}
            )
            out = denoiser(torch.from_numpy(a[:, None]))[:, 0].numpy()
            scores.append(
                (float(trainer.callback_metrics["val_loss"]), float(np.mean((out - truth)[body] ** 2)))
            )

    config = N2NConfig(**{**TINY, "patch_size": 32, "steps": 240, "val_every": 30, "lr": 2e-3})
    api.fit(
        "n2n", [(a, b)], axes="SYX", out=tmp_path / "m", config=config, progress=False, callbacks=[Score()]
    )
    val, true = np.array(scores).T
    assert len(val) == 8
    assert stats.spearmanr(val, true).statistic > 0.7
    # the checkpoint the held-out loss keeps is (nearly) the one the truth would keep
    assert true[np.argmin(val)] < 1.1 * true.min()


@pytest.mark.parametrize("hot_fraction", [0.0, 0.5])
def test_no_training_patch_touches_a_held_out_validation_cell(hot_fraction):
    rng = np.random.default_rng(6)
    image = rng.normal(size=(3, 64, 64)).astype(np.float32)
    image[1, 20:24, 20:24] += 8
    sampler = selfsup.PatchSampler(
        [image], (16, 16), val_fraction=0.2, max_val=10, seed=3, hot_fraction=hot_fraction
    )
    marks = np.zeros_like(image)
    for j, cy, cx in np.argwhere(sampler.val_cells[0]):
        marks[j, cy * 16 : (cy + 1) * 16, cx * 16 : (cx + 1) * 16] = 1
    # tag every pixel with its position, draw without augmentation, and look the drawn pixels up
    tagged = np.arange(image.size, dtype=np.float64).reshape(image.shape)
    sampler.stacks = [tagged.astype(np.float32)]
    batch = sampler.draw(300, rng, rotate=False)
    seen = np.unique(batch.astype(np.int64))
    assert marks.reshape(-1)[seen].sum() == 0


@pytest.mark.slow
def test_the_single_frame_criterion_held_out_masked_pixels_ranks_n2v_checkpoints_as_the_truth(tmp_path):
    """N2V picks its checkpoint by the masked-pixel loss on held-out patches: it tracks the true error."""
    import copy

    import lightning as L
    from scipy import stats

    from pairless.methods.n2v import N2VConfig

    rng = np.random.default_rng(7)
    clean = np.stack([_smooth(64) * (1 + 0.2 * k) for k in range(6)])
    noisy = clean + rng.normal(0, 0.4, clean.shape).astype(np.float32)
    mean, std = selfsup.mean_std([noisy])
    scores = []

    class Score(L.Callback):
        def on_validation_end(self, trainer, module):
            denoiser = selfsup.NetDenoiser(
                copy.deepcopy(module.net), normalisation={"mean": mean, "std": std}
            )
            out = denoiser(torch.from_numpy(noisy[:, None]))[:, 0].numpy()
            scores.append((float(trainer.callback_metrics["val_loss"]), float(np.mean((out - clean) ** 2))))

    config = N2VConfig(**{**TINY, "steps": 240, "val_every": 30, "mask_fraction": 0.02, "lr": 2e-3})
    api.fit(
        "n2v", [noisy], axes="SYX", out=tmp_path / "m", config=config, progress=False, callbacks=[Score()]
    )
    val, true = np.array(scores).T
    assert stats.spearmanr(val, true).statistic > 0.6
    assert true[np.argmin(val)] < 1.2 * true.min()
