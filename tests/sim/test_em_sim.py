"""EM charge/film noise and the classical noise helpers: reproducibility and physical properties."""

import numpy as np
import pytest

from pairless.errors import PairlessError
from pairless.sim.em import ChargeNoise, FilmNoise, charge_noise, em_noise, film_noise, noise_only
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


# shorter correlation lengths and denser defects than the defaults, so that a dozen crops pin the
# statistics down; the property (lengths in pixels, counts per area) holds for every parameter set
SCALED = {
    "charge": ChargeNoise(gain_sd=0.2, gain_sigma=24, band_sigma=(2, 24), jump_rate=0.05),
    "film": FilmNoise(
        mottle_sd=0.15,
        mottle_sigma=12,
        stains=400,
        stain_radius=(3, 10),
        folds=40,
        fold_length=(40, 120),
        scratches=80,
        scratch_length=(40, 120),
        holes=20,
        hole_radius=(3, 8),
    ),
}


def _noise_statistics(size: int, kind: str, seeds) -> np.ndarray:
    """Variance of the noise about the true level, then its autocorrelation at lags (x, y) (1,0) (8,0) (0,1)
    (0,8) (32,0) (0,32)."""
    lags = [(1, 0), (8, 0), (0, 1), (0, 8), (32, 0), (0, 32)]
    acc = []
    for seed in seeds:
        n = em_noise(np.full((size, size), 0.5, np.float32), kind=kind, params=SCALED[kind], rng=seed) - 0.5
        acc.append([np.mean(n[dy:, dx:] * n[: size - dy, : size - dx]) for dx, dy in [(0, 0), *lags]])
    a = np.mean(acc, axis=0)
    return np.r_[a[0], a[1:] / a[0]]


@pytest.mark.parametrize("kind", ["charge", "film"])
def test_same_parameters_give_the_same_noise_statistics_on_256_and_512_crops(kind):
    small = _noise_statistics(256, kind, range(12))
    large = _noise_statistics(512, kind, range(100, 103))  # the same number of pixels
    np.testing.assert_allclose(small[:5], large[:5], rtol=0.15)  # variance and short-range correlation
    np.testing.assert_allclose(small[5:], large[5:], atol=0.1)  # 32-px correlation: fewer independent samples
    assert small[0] > 0.005  # not trivially equal: there is noise to measure


@pytest.mark.parametrize("kind", ["charge", "film"])
def test_additive_noise_is_independent_of_the_image(kind):
    bright = 0.35 + 0.3 * _texture((96, 128), seed=1)  # two different specimens, away from the clip limits
    dark = 0.35 + 0.3 * _texture((96, 128), seed=2)
    a = em_noise(bright, kind=kind, mode="additive", rng=7) - bright
    b = em_noise(dark, kind=kind, mode="additive", rng=7) - dark
    field = noise_only((96, 128), kind=kind, rng=7) - 0.5
    unclipped = np.abs(field) < 0.3
    assert unclipped.mean() > 0.97
    np.testing.assert_allclose(a[unclipped], b[unclipped], atol=1e-5)  # the same noise on both images
    np.testing.assert_allclose(
        a[unclipped], field[unclipped], atol=1e-5
    )  # exactly the pasted noise-only image
    assert abs(np.corrcoef(a.ravel(), bright.ravel())[0, 1]) < 0.1
    # the structural mode is image-dependent (film multiplies, charge has tails and shot noise): the contrast
    s, t = (em_noise(im, kind=kind, rng=7) - im for im in (bright, dark))
    assert np.abs(s - t).max() > 0.01


def test_default_noise_level_is_the_same_in_both_modes():
    from skimage.metrics import peak_signal_noise_ratio

    clean = _texture((256, 256)) * 0.6 + 0.2
    for kind in ("charge", "film"):
        levels = [
            peak_signal_noise_ratio(clean, em_noise(clean, kind=kind, mode=mode, rng=1), data_range=1.0)
            for mode in ("structural", "additive")
        ]
        assert abs(levels[0] - levels[1]) < 1.5, (kind, levels)


def test_bad_input_is_a_pairless_error():
    with pytest.raises(PairlessError, match="scaled to"):
        charge_noise(np.full((8, 8), 255.0))
    with pytest.raises(PairlessError, match="2D"):
        film_noise(np.zeros((2, 8, 8)))
    with pytest.raises(PairlessError, match="unknown EM noise"):
        em_noise(np.zeros((8, 8)), kind="salt")
    with pytest.raises(PairlessError, match="unknown EM noise mode"):
        em_noise(np.zeros((8, 8)), kind="film", mode="pasted")


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
