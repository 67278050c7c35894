"""EM charge/film noise and the classical noise helpers: reproducibility and physical properties."""

import numpy as np
import pytest

from pairless.errors import PairlessError
from pairless.sim.em import ChargeNoise, FilmNoise, charge_noise, em_noise, film_noise
from pairless.sim.noise import gaussian_noise, poisson_gaussian_noise, poisson_noise


def _texture(shape=(128, 160), seed=0):
    from scipy import ndimage

    field = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), 3)
    return ((field - field.min()) / (field.max() - field.min())).astype(np.float32)


def _lag_corr(noise: np.ndarray, axis: int, lag: int) -> float:
    a = np.moveaxis(noise, axis, 0)
    return float(np.corrcoef(a[lag:].ravel(), a[:-lag].ravel())[0, 1])


@pytest.mark.parametrize("kind", ["charge", "film"])
def test_seed_reproducible_shape_preserving_and_finite(kind):
    clean = _texture((67, 93))  # odd sizes catch shape bugs
    a, b = em_noise(clean, kind=kind, rng=3), em_noise(clean, kind=kind, rng=3)
    c = em_noise(clean, kind=kind, rng=4)
    assert a.shape == clean.shape and a.dtype == np.float32
    assert np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.abs(a - clean).mean() > 0.01  # noise was actually added


def test_charge_streaks_follow_the_scan_direction():
    clean = np.full((256, 256), 0.5, np.float32)  # flat: no charging tails, only the noise itself
    # without the (isotropic) gain drift, what is left of the correlation is the scan's
    noise = charge_noise(clean, params=ChargeNoise(gain_sd=0), rng=0) - clean
    along_rows, across_rows = _lag_corr(noise, axis=1, lag=5), _lag_corr(noise, axis=0, lag=5)
    assert along_rows > 0.3
    assert along_rows > 5 * abs(across_rows)
    noise = charge_noise(clean, rng=0) - clean
    assert _lag_corr(noise, axis=1, lag=5) > 2 * _lag_corr(noise, axis=0, lag=5)


def test_charging_tails_trail_bright_structures_along_x():
    clean = np.full((64, 128), 0.3, np.float32)
    clean[:, 40:44] = 0.9  # a bright vertical bar
    quiet = ChargeNoise(gain_sd=0, streak_sd=0, band_sd=0, jump_rate=0, peak=1e9, read_sd=0)
    noisy = charge_noise(clean, params=quiet, rng=0)
    after, before = noisy[:, 46:52].mean(), noisy[:, 32:38].mean()
    assert after > before + 0.02  # the tail is behind the bar in +x only
    assert abs(before - 0.3) < 1e-3


def test_film_noise_is_multiplicative():
    params = FilmNoise(holes=0)  # holes replace intensity; everything else multiplies it
    low, high = (film_noise(np.full((128, 128), v, np.float32), params=params, rng=5) for v in (0.2, 0.4))
    np.testing.assert_allclose(high, 2 * low, rtol=1e-5, atol=1e-6)
    assert (high - 0.4).var() > 3 * (low - 0.2).var()


def test_default_noise_level_is_in_the_calibrated_range():
    from skimage.metrics import peak_signal_noise_ratio

    clean = _texture((256, 256)) * 0.6 + 0.2
    for kind in ("charge", "film"):
        level = peak_signal_noise_ratio(clean, em_noise(clean, kind=kind, rng=1), data_range=1.0)
        assert 15 < level < 26, (kind, level)


def test_bad_input_is_a_pairless_error():
    with pytest.raises(PairlessError, match="scaled to"):
        charge_noise(np.full((8, 8), 255.0))
    with pytest.raises(PairlessError, match="2D"):
        film_noise(np.zeros((2, 8, 8)))
    with pytest.raises(PairlessError, match="unknown EM noise"):
        em_noise(np.zeros((8, 8)), kind="salt")


def test_classical_noise_moments():
    flat = np.full((200, 200), 0.5)
    assert abs(gaussian_noise(flat, sigma=0.1, rng=0).std() - 0.1) < 0.005
    shot = poisson_noise(flat, peak=100, rng=0)
    assert abs(shot.mean() - 0.5) < 0.005 and abs(shot.var() - 0.5 / 100) < 5e-4
    both = poisson_gaussian_noise(flat, peak=100, sigma=0.05, rng=0)
    assert abs(both.var() - (0.5 / 100 + 0.05**2)) < 6e-4
    np.testing.assert_array_equal(poisson_noise(flat, peak=10, rng=1), poisson_noise(flat, peak=10, rng=1))
    with pytest.raises(PairlessError, match="non-negative"):
        poisson_noise(flat - 1, peak=10)
