"""Recorrupted-to-Recorrupted: it learns the clean mean from noise alone (where Noise2Noise on the same noisy
image learns the identity), its Poisson-Gaussian recorruption has the moments GR2R needs, and ``init``
(start from the prior) is refused in one line by the methods that cannot take it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pairless import api
from pairless.denoiser import denoise_array
from pairless.errors import PairlessError
from pairless.methods import r2r, registry
from pairless.training import selfsup

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(
    steps=60, val_every=30, batch_size=4, patch_size=32, depth=1, filters=8, lr=3e-3, precision="32-true"
)


class _SameNoiseN2N(r2r.R2R):
    """The identity-prone loss R2R replaces: Noise2Noise with the noisy image as its own target."""

    def loss(self, net, batch, *, generator, progress):
        return ((net(batch).float() - batch) ** 2).mean()


def _pure_noise(seed: int, shape=(64, 64)) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.3, 0.1, shape).astype(np.float32)


def _output_std(objective, tmp_path) -> float:
    config, weights = selfsup.train(
        objective, [_pure_noise(i) for i in range(3)], axes="YX", out=tmp_path, seed=0, progress=False
    )
    denoiser = selfsup.load_denoiser(r2r.R2R, config, weights)
    test = _pure_noise(99)
    return float(denoise_array(test, denoiser, axes="YX").std() / test.std())


def test_r2r_on_pure_noise_outputs_the_mean_where_n2n_on_the_same_noise_keeps_the_identity(tmp_path):
    # the clean image is a constant: the supervised optimum, and R2R's, is that constant (output std ~ 0)
    config = r2r.R2RConfig.for_profile("quick", **TINY)
    r2r_std = _output_std(r2r.R2R(config), tmp_path / "r2r")
    # ‖f(y) − y‖² is minimised by f = identity: its output keeps the noise (std ratio ~ 1)
    n2n_std = _output_std(_SameNoiseN2N(config), tmp_path / "n2n")
    assert r2r_std < 0.3, r2r_std
    assert n2n_std > 0.6, n2n_std  # the same check fails for the identity-prone loss


@pytest.mark.parametrize("alpha", [0.5, 1.5])
def test_gr2r_recorruption_of_poisson_gaussian_noise_has_the_moments_gr2r_needs(alpha):
    # Var = a·x + b, a pedestal c under the shot noise: y = a·Poisson((x − c)/a) + c + N(0, r²), b = r² − a·c
    a, c, r = 0.02, 0.05, 0.06
    b = r * r - a * c
    generator = torch.Generator().manual_seed(0)
    for x in (0.2, 0.6, 1.5):
        shape = (16, 1, 96, 96)
        counts = torch.poisson(torch.full(shape, (x - c) / a), generator=generator)
        y = a * counts + c + r * torch.randn(shape, generator=generator)
        noisier, target, s = r2r.recorrupt(y, {"a": a, "b": b}, alpha=alpha, generator=generator)
        n1, n2 = (noisier - x).double(), (target - x).double()
        variance = a * x + b
        count = n1.numel()
        # first moments: both copies are unbiased
        for n, v in ((n1, (1 + alpha**2) * variance), (n2, (1 + alpha**-2) * variance)):
            assert abs(float(n.mean())) < 5 * (v / count) ** 0.5
            assert float(n.var()) == pytest.approx(v, rel=0.03)
        # second moment: the two noises are uncorrelated (R2R's condition, GR2R Theorem 1's for the split)
        covariance = float((n1 * n2).mean() - n1.mean() * n2.mean())
        assert abs(covariance) < 0.03 * variance, (x, covariance, variance)
        # ... which a wrong noise model breaks: the same check sees the variance halved
        wrong, wrong_target, _ = r2r.recorrupt(y, {"a": a / 2, "b": b / 2}, alpha=alpha, generator=generator)
        wrong_cov = float(((wrong - x) * (wrong_target - x)).double().mean())
        assert wrong_cov > 0.3 * variance  # half the noise variance left correlated


def test_recorruption_noise_is_fitted_in_image_units_and_used_in_normalised_ones():
    stack = _pure_noise(0, (128, 128))[None]
    objective = r2r.R2R(r2r.R2RConfig.for_profile("quick", noise="gaussian"))
    learned = objective.prepare([stack], mean=0.3, std=0.1)
    assert learned["noise_model"]["a"] == 0 and learned["noise_model"]["b"] == pytest.approx(0.01, rel=0.1)
    assert objective.noise_model["b"] == pytest.approx(learned["noise_model"]["b"] / 0.01)  # σ'² = σ²/std²
    given = r2r.R2R(r2r.R2RConfig.for_profile("quick", sigma=0.05)).prepare([stack], mean=0.3, std=0.1)
    assert given["noise_model"] == {"a": 0.0, "b": pytest.approx(0.0025)}


def test_init_prior_is_refused_in_one_line_by_methods_that_cannot_take_it(tmp_path):
    with pytest.raises(PairlessError) as caught:
        api.fit("n2v", [_pure_noise(0)], out=tmp_path / "m", axes="YX", init="prior")
    message = str(caught.value)
    assert "\n" not in message and "ne2ne" in message and "r2r" in message and "n2v" in message
    assert registry.names_with_option("init") == ["ne2ne", "r2r"]
    with pytest.raises(PairlessError, match="only ne2ne, r2r take --init prior"):
        registry.get("iscl").configure("quick", {"init": "prior"})
    # "none" is every method's start: accepted (and dropped) by those without the setting
    assert registry.get("n2v").configure("quick", init="none").steps > 0


def test_pairless_fit_of_a_method_without_init_says_so_in_one_line(tmp_path, capsys):
    import tifffile

    from pairless.cli import main

    image = tmp_path / "noisy.tif"
    tifffile.imwrite(image, _pure_noise(0))
    assert main(["fit", "n2v", str(image), "--out", str(tmp_path / "m"), "--init", "prior"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_a_noise_model_without_noise_on_many_pixels_is_said_before_training():
    # W2S's 8-bit frames fit a = 15.9, b = -150: a·x + b <= 0 on the dark fifth of the pixels, where the
    # recorruption vanishes and R2R learns the identity (measured: 24.5 dB against BM3D + VST's 28.7)
    dark = np.full((1, 32, 32), 5.0, np.float32)
    bright = np.full((1, 32, 32), 50.0, np.float32)
    assert r2r.noiseless_fraction([dark, bright], 15.9, -150.0) == 0.5
    assert r2r.noiseless_fraction([bright], 15.9, -150.0) == 0.0
    objective = r2r.R2R(r2r.R2RConfig.for_profile("quick"))
    rng = np.random.default_rng(0)
    # photon counts (gain 10) on a camera pedestal of 40: Var = 10·(x − 40), b = −400 < 0, and the many
    # zero-count pixels of the dark side sit on the pedestal, where the model has no noise
    level = np.linspace(0.02, 5, 128)[None, :] * np.ones((128, 1))
    image = (10.0 * rng.poisson(level) + 40).astype(np.float32)[None]
    mean, std = float(image.mean()), float(image.std())
    with pytest.warns(UserWarning, match="gives no noise on"):
        objective.prepare([image], mean=mean, std=std)
