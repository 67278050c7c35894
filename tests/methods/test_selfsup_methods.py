"""The every-pixel self-supervised methods (Neighbor2Neighbor, blind-spot network, Zero-Shot N2N).

Each must learn the signal and nothing of the noise: trained on pure noise it outputs about the mean
(an identity would give back the noise), and on a tiny noisy image it beats its input in seconds.
"""

import numpy as np
import pytest
import torch

from pairless import api
from pairless.cli import main
from pairless.errors import PairlessError
from pairless.methods.bsn import BSN, BSNConfig, PosteriorMean
from pairless.methods.ne2ne import Ne2NeConfig, neighbour_subsampler, subsample
from pairless.methods.registry import load_model
from pairless.methods.zsn2n import ZSN2NConfig, pair_downsampler
from pairless.nets.blindspot import BlindSpotNet

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(patch_size=32, batch_size=8, filters=8, precision="32-true", val_every=40, depth=2)
CONFIGS = {
    "ne2ne": Ne2NeConfig(**TINY, steps=120, lr=4e-3),
    "bsn": BSNConfig(**TINY, steps=120, lr=4e-3),
    "zsn2n": ZSN2NConfig(**{**TINY, "filters": 16}, steps=120, lr=4e-3),
}


def _fit(method, images, folder, config=None, axes="SYX"):
    return api.fit(method, images, axes=axes, out=folder, config=config or CONFIGS[method], progress=False)


def _smooth(n=96):
    y, x = np.mgrid[:n, :n] / n
    return (np.sin(6 * x) * np.cos(4 * y) + 0.5 * np.sin(9 * (x + y))).astype(np.float32)


def _psnr(clean, x):
    return 10 * np.log10(np.ptp(clean) ** 2 / np.mean((x - clean) ** 2))


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(CONFIGS))
def test_trained_on_pure_noise_it_outputs_about_the_mean(tmp_path, method):
    noise = np.random.default_rng(0).normal(3.0, 1.0, (4, 64, 64)).astype(np.float32)
    denoiser = _fit(method, [noise], tmp_path / "m")
    out = denoiser(torch.from_numpy(noise[:1, None]))
    assert out.std().item() < 0.35  # the identity would give back std 1
    assert abs(out.mean().item() - 3.0) < 0.3


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(CONFIGS))
def test_it_beats_its_noisy_input_on_a_tiny_image(tmp_path, method):
    rng = np.random.default_rng(1)
    clean = _smooth()
    noisy = np.stack([clean + rng.normal(0, 0.3, clean.shape).astype(np.float32) for _ in range(4)])
    _fit(method, [noisy], tmp_path / "m")
    out = load_model(tmp_path / "m")(torch.from_numpy(noisy[:, None]))[:, 0].numpy()
    assert _psnr(clean, out) > _psnr(clean, noisy) + 4


def test_the_blind_spot_network_never_sees_the_pixel_it_predicts():
    torch.manual_seed(0)
    net = BlindSpotNet(depth=2, filters=4)
    for shape in ((1, 1, 32, 32), (1, 1, 16, 40)):
        x = torch.randn(shape, requires_grad=True)
        out = net(x)
        for i, j in ((0, 0), (shape[2] // 2, shape[3] // 2), (shape[2] - 1, 3), (5, shape[3] - 1)):
            (grad,) = torch.autograd.grad(out[0, 0, i, j], x, retain_graph=True)
            assert grad[0, 0, i, j] == 0
            # ... but it sees all four neighbours (the four rotations cover every direction)
            for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                if 0 <= i + di < shape[2] and 0 <= j + dj < shape[3]:
                    assert grad[0, 0, i + di, j + dj] != 0


@pytest.mark.slow
def test_the_posterior_step_beats_the_blind_spot_mean_on_gaussian_noise_of_known_sigma(tmp_path):
    rng = np.random.default_rng(2)
    clean = _smooth()
    noisy = np.stack([clean + rng.normal(0, 0.3, clean.shape).astype(np.float32) for _ in range(4)])
    config = BSNConfig(**TINY, steps=160, lr=4e-3, sigma=0.3)
    _fit("bsn", [noisy], tmp_path / "m", config=config)
    posterior = load_model(tmp_path / "m")
    assert isinstance(posterior.net, PosteriorMean)
    x = torch.from_numpy(noisy[:, None])
    with torch.no_grad():
        after = posterior(x)[:, 0].numpy()
        normalised = (x - posterior.mean) / posterior.std
        mean_only = posterior.net.net(normalised)[:, :1] * posterior.std + posterior.mean
    assert _psnr(clean, after) > _psnr(clean, mean_only[:, 0].numpy()) + 0.3


def test_the_fitted_noise_model_is_stored_and_close_to_the_truth(tmp_path):
    from pairless.config import read_yaml

    rng = np.random.default_rng(3)
    y, x = np.mgrid[:160, :160] / 160
    clean = (2.0 + 0.5 * np.sin(2 * x) * np.cos(3 * y)).astype(np.float32)
    noisy = np.stack([clean + rng.normal(0, 0.2, clean.shape).astype(np.float32) for _ in range(2)])
    _fit("bsn", [noisy], tmp_path / "m", config=BSNConfig(**{**TINY, "val_every": 1}, steps=2))
    model = read_yaml(tmp_path / "m" / "config.yaml")["noise_model"]
    assert model["a"] == 0 and model["b"] == pytest.approx(0.04, rel=0.2)


def test_images_too_small_to_fit_the_noise_on_are_left_out_with_a_warning():
    from pairless.methods.bsn import fit_noise

    rng = np.random.default_rng(4)
    flat = (1.0 + rng.normal(0, 0.1, (1, 160, 160))).astype(np.float32)
    tiny = (1.0 + rng.normal(0, 0.5, (1, 16, 16))).astype(np.float32)  # 64 blocks: too few to fit
    with pytest.warns(UserWarning, match="measured on 1 of 2 training images"):
        a, b = fit_noise([flat, tiny], noise="gaussian", sigma=None)
    assert b == pytest.approx(0.01, rel=0.2)  # the flat image's noise alone, not the tiny one's 0.25
    with pytest.raises(PairlessError, match="could not be measured on any of the 1 training images"):
        fit_noise([tiny], noise="gaussian", sigma=None)


def test_neighbour_subsampler_draws_distinct_adjacent_pairs_uniformly():
    g = torch.Generator().manual_seed(0)
    i1, i2 = neighbour_subsampler((64, 1, 8, 8), generator=g)
    r1, c1 = (i1 % 64) // 8, i1 % 8
    r2, c2 = (i2 % 64) // 8, i2 % 8
    assert torch.all((r1 - r2).abs() + (c1 - c2).abs() == 1)  # adjacent, never the same pixel
    assert torch.all((r1 // 2 == r2 // 2) & (c1 // 2 == c2 // 2))  # within one 2×2 cell
    pairs = ((r1 % 2) * 2 + c1 % 2) * 4 + (r2 % 2) * 2 + c2 % 2
    counts = torch.bincount(pairs, minlength=16).float()
    assert (counts > 0).sum() == 8 and counts.max() / counts[counts > 0].min() < 1.3
    x = torch.arange(2 * 64, dtype=torch.float32).reshape(2, 1, 8, 8)
    i1, i2 = neighbour_subsampler((2, 1, 8, 8), generator=g)
    assert subsample(x, i1).shape == (2, 1, 4, 4) and torch.all(
        subsample(x, i1)[1] >= 64
    )  # each patch its own


def test_the_pair_downsampler_averages_diagonals():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    d1, d2 = pair_downsampler(x)
    assert d1.item() == 2.5 and d2.item() == 2.5
    x = torch.tensor([[[[1.0, 0.0], [0.0, 5.0]]]])
    d1, d2 = pair_downsampler(x)
    assert d1.item() == 3.0 and d2.item() == 0.0


def test_bad_input_gets_one_line_and_nothing_written(tmp_path, capsys):
    image = np.random.default_rng(0).normal(size=(20, 20)).astype(np.float32)
    np.save(tmp_path / "small.npy", image)
    for args in (
        [
            "fit",
            "ne2ne",
            str(tmp_path / "small.npy"),
            "--out",
            str(tmp_path / "m1"),
        ],  # smaller than the patch
        ["fit", "ne2ne", str(tmp_path / "small.npy"), "--out", str(tmp_path / "m2"), "--3d"],  # no Z axis
        ["fit", "bsn", str(tmp_path / "small.npy"), "--out", str(tmp_path / "m3"), "--noise", "laplace"],
    ):
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.npy"]
    with pytest.raises(PairlessError, match="multiple of 8"):
        _fit(
            "ne2ne",
            [np.zeros((2, 64, 64), np.float32) + np.arange(64)],
            tmp_path / "m",
            config=Ne2NeConfig(**{**TINY, "patch_size": 36}),
        )
    with pytest.raises(PairlessError, match="2D only"):
        BSN(BSNConfig(ndim=3))


@pytest.mark.slow
def test_neighbor2neighbor_trains_and_denoises_in_3d(tmp_path):
    rng = np.random.default_rng(4)
    z, y, x = np.mgrid[:32, :48, :48] / 48
    clean = (np.sin(5 * x) * np.cos(4 * y) + np.sin(3 * z)).astype(np.float32)
    noisy = clean + rng.normal(0, 0.3, clean.shape).astype(np.float32)
    # the default precision: "auto" must not pick bf16 for 3D on a CPU (its weights went NaN)
    config = Ne2NeConfig(
        **{**TINY, "ndim": 3, "patch_size": 16, "patch_depth": 16, "batch_size": 4, "precision": "auto"},
        steps=80,
        lr=4e-3,
    )
    denoiser = _fit("ne2ne", [noisy], tmp_path / "m", config=config, axes="ZYX")
    assert denoiser.spatial_ndim == 3
    out = denoiser(torch.from_numpy(noisy[None, None]))[0, 0].numpy()
    assert _psnr(clean, out) > _psnr(clean, noisy) + 2
