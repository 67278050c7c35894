"""The adversarial baselines of seed 002's Table 2 (ADN, UIDNet, CaGAN): each learns on the two-domain toy
ISCL is tested on, its discriminator leaves chance, its attention is the published one, and bad input is
one line."""

import csv

import numpy as np
import pytest
import torch

from pairless import api
from pairless.errors import PairlessError
from pairless.methods.adn import ADNConfig
from pairless.methods.cagan import CaGANConfig
from pairless.methods.uidnet import UIDNetConfig, UIDNetModule
from pairless.metrics.image import psnr
from pairless.nets.cagan import CrissCrossAttention

pytestmark = pytest.mark.usefixtures("one_thread")


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


TOY = dict(batch_size=4, val_every=10, val_batches=1, precision="32-true", warmup_steps=5, decay_start=0.5)

# name: (config, the log column that shows the discriminator learning, its value at chance)
CASES = {
    "adn": (
        ADNConfig(width=4, residual_blocks=1, discriminator_width=4, lr=2e-3, steps=60, **TOY),
        "loss_d",
        0.5,
    ),
    # UIDNet learns only through its generator's noise, slowly: 300 steps (lr 5e-4) for +1 dB
    "uidnet": (
        UIDNetConfig(
            generator_width=8,
            critic_width=8,
            denoiser_depth=6,
            denoiser_channels=16,
            lr=5e-4,
            steps=300,
            **TOY,
        ),
        "wasserstein",
        0.0,
    ),
    # CaGAN's clean-domain critic stays at chance (G1 is trained on the pairs); the noisy-domain one learns.
    # 32² patches: its attention at full resolution makes 64² patches cost 4× as much
    "cagan": (
        CaGANConfig(width=8, feature_depth=2, discriminator_width=8, patch_size=32, lr=2e-3, steps=60, **TOY),
        "loss_d1",
        0.5,
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_each_learns_on_the_two_domain_toy_and_its_discriminator_leaves_chance(name, tmp_path):
    # clean domain: smooth images; noisy domain: *other* smooth images + white noise (CaGAN, paired:
    # the noisy images with their own clean ones).  Its output must be closer to the truth than its input
    # and its discriminator must do better than chance: LSGAN loss below chance (ADN's two critics 0.5,
    # CaGAN's noisy-domain critic 0.5), or a positive Wasserstein estimate (UIDNet, 0 at chance)
    config, column, chance = CASES[name]
    # UIDNet's critic memorises four 64² images, and its generator then hides their content under far too
    # much noise (measured: noise sd 0.7 for 0.4, output 2 dB worse than the input); sixteen 128² ones not
    n, size = (16, 128) if name == "uidnet" else (4, 64)
    clean, _ = _toy_domains(n, seed=0, size=size)
    truth, noisy = _toy_domains(n, seed=1, size=size, sigma=0.2)
    den = api.fit(
        name,
        noisy,
        clean=truth if name == "cagan" else clean,
        out=tmp_path / "m",
        config=config,
        seed=0,
        progress=False,
    )
    with open(tmp_path / "m" / "training" / "training_log.csv") as f:
        log = [float(r[column]) for r in csv.DictReader(f)]
    late = log[-1]
    if column == "wasserstein":
        assert late > chance + 0.05, log
    else:
        assert late < 0.8 * chance, log
    x = torch.from_numpy(np.stack(noisy))[:, None]
    with torch.no_grad():
        out = den(x)[:, 0].numpy()
    before = np.mean([psnr(n, t, data_range=1.0) for n, t in zip(noisy, truth)])
    after = np.mean([psnr(o, t, data_range=1.0) for o, t in zip(out, truth)])
    assert after > before + (0.5 if name == "uidnet" else 1.0), (before, after)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line(name, tmp_path):
    config = CASES[name][0]
    gray = [np.random.default_rng(0).random((72, 72)).astype(np.float32)]
    rgb = [np.random.default_rng(1).random((72, 72, 3)).astype(np.float32)]
    cases = (
        (rgb, gray, "3 channel"),
        (gray, [], "clean set is empty"),
        ([], gray, "noisy set is empty"),
    )
    for noisy, clean, message in cases:
        with pytest.raises(PairlessError, match=message) as caught:
            api.fit(name, noisy, clean=clean, out=tmp_path / "m", config=config, progress=False)
        assert "\n" not in str(caught.value)


def test_criss_cross_attention_is_the_published_operator():
    # every pixel attends to the pixels of its row and its column, itself once: a brute-force softmax
    # over that set gives the same output; the port's +3.4e38 diagonal would make it one-hot on the pixel
    torch.manual_seed(0)
    block = CrissCrossAttention(16)
    with torch.no_grad():
        block.gamma.fill_(0.5)
    x = torch.randn(1, 16, 5, 6)
    q, k, v = block.q(x)[0], block.k(x)[0], block.v(x)[0]
    expected = torch.empty_like(x[0])
    for i in range(5):
        for j in range(6):
            where = [(i, jj) for jj in range(6)] + [(ii, j) for ii in range(5) if ii != i]
            energies = torch.stack([q[:, i, j] @ k[:, a, b] for a, b in where])
            weights = torch.softmax(energies, 0)
            expected[:, i, j] = sum(w * v[:, a, b] for w, (a, b) in zip(weights, where))
    with torch.no_grad():
        got = block(x)[0]
    torch.testing.assert_close(got, 0.5 * expected + x[0], atol=1e-5, rtol=1e-5)
    assert float(weights.max()) < 0.9  # the attention spreads: not the port's one-hot on the pixel


def test_uidnet_penalty_is_per_sample_over_the_whole_image():
    # a critic D(u) = c·Σu has the gradient c at every pixel: ‖∇‖ = c·√(H·W) for every sample
    class Linear(torch.nn.Module):
        def forward(self, u):
            return 0.01 * u.sum(dim=(1, 2, 3))

    module = UIDNetModule(
        UIDNetConfig(generator_width=2, critic_width=2, denoiser_depth=2, denoiser_channels=2)
    )
    module.D = Linear()
    x, fake = torch.rand(3, 1, 64, 64), torch.rand(3, 1, 64, 64)
    assert float(module.gradient_penalty(x, fake)) == pytest.approx((0.01 * 64 - 1) ** 2, rel=1e-4)
