"""Colour-noise BM3D without pairs: the noise PSD estimated from a noisy and an unpaired clean set (or flat
background) is right band by band on coloured noise of known spectrum, and BM3D with it beats BM3D with a
white σ; the ``--psd`` options from the CLI and the API."""

import numpy as np
import pytest
from numpy.fft import fft2, ifft2

from pairless import api, noise_psd
from pairless.cli import main
from pairless.errors import PairlessError

SHAPE = (256, 256)


def _embed(kernel: np.ndarray, shape) -> np.ndarray:
    """A centred odd kernel on the torus of ``shape``, its centre at [0, 0]."""
    out = np.zeros(shape)
    rows = (np.arange(kernel.shape[0]) - kernel.shape[0] // 2) % shape[0]
    cols = (np.arange(kernel.shape[1]) - kernel.shape[1] // 2) % shape[1]
    out[np.ix_(rows, cols)] = kernel
    return out


def _gaussian_kernel(sy: float, sx: float, size: int = 25) -> np.ndarray:
    r = np.arange(size) - size // 2
    g = np.exp(-(r[:, None] ** 2) / (2 * sy**2) - (r[None, :] ** 2) / (2 * sx**2))
    return g / np.sqrt((g**2).sum())  # unit energy: the filtered noise keeps the white noise's variance


def _filtered_noise(kernel, sigma, shape, rng):
    """White N(0, σ²) filtered circularly: its spectral density is exactly σ²|K|²."""
    return np.real(ifft2(fft2(rng.standard_normal(shape) * sigma) * fft2(_embed(kernel, shape))))


def _ar1_noise(rho, sigma, shape, rng, burn=200):
    """Rows of an AR(1) process along x (scan streaks): S(f) = σ²/|1 - ρ e^{-2πif_x}|²."""
    e = rng.standard_normal((shape[0], shape[1] + burn)) * sigma
    out = np.zeros_like(e)
    for j in range(1, e.shape[1]):
        out[:, j] = rho * out[:, j - 1] + e[:, j]
    return out[:, burn:]


def _band_errors(estimate, truth, edges=(0, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 0.5001), share=0.01):
    """Relative error of the power integrated over octave bands of |f_y| × |f_x| (DC left out), for the
    bands that hold at least ``share`` of the noise power."""
    fy = np.abs(np.fft.fftfreq(truth.shape[0]))[:, None]
    fx = np.abs(np.fft.fftfreq(truth.shape[1]))[None, :]
    errors = []
    for i in range(len(edges) - 1):
        for j in range(len(edges) - 1):
            band = (fy >= edges[i]) & (fy < edges[i + 1]) & (fx >= edges[j]) & (fx < edges[j + 1])
            band &= ~((fy == 0) & (fx == 0))
            if truth[band].sum() >= share * truth.sum():
                errors.append(estimate[band].sum() / truth[band].sum() - 1)
    return np.array(errors)


def _cases(rng):
    kernel = _gaussian_kernel(1.0, 3.0)
    sigma = 0.08
    aniso = [_filtered_noise(kernel, sigma, SHAPE, rng) for _ in range(10)]
    aniso_truth = sigma**2 * np.abs(fft2(_embed(kernel, SHAPE))) ** 2
    rho, innovation = 0.9, 0.08 * np.sqrt(1 - 0.9**2)
    streaks = [_ar1_noise(rho, innovation, SHAPE, rng) for _ in range(10)]
    fx = np.fft.fftfreq(SHAPE[1])
    streak_truth = np.broadcast_to(innovation**2 / np.abs(1 - rho * np.exp(-2j * np.pi * fx)) ** 2, SHAPE)
    return {"anisotropic gaussian": (aniso, aniso_truth), "AR(1) streaks": (streaks, streak_truth)}


def test_psd_from_a_noisy_and_a_clean_set_is_within_10_percent_in_every_band():
    # noisy images: flat scenes (a different level each) + coloured noise of known PSD; clean set: other
    # flat scenes.  The estimate (noisy set's autocovariance minus the clean set's, lag 48, tapered) must
    # hold every band with ≥ 1 % of the power within 10 %, and the noise's mean (0.02 here) within 10 %
    rng = np.random.default_rng(0)
    for name, (noise, truth) in _cases(rng).items():
        levels = rng.uniform(0.3, 0.7, size=len(noise))
        noisy = [level + 0.02 + n for level, n in zip(levels, noise)]
        clean = [np.full(SHAPE, level) for level in rng.uniform(0.3, 0.7, size=len(noise))]
        clean_mean, noisy_scene = np.mean([c.mean() for c in clean]), levels.mean()
        psd = noise_psd.from_sets(noisy, clean)
        errors = _band_errors(psd.density(SHAPE), truth)
        assert np.abs(errors).max() < 0.10, (name, errors.round(3))
        # the offset is the noise's mean plus the two sets' different scene levels
        assert psd.offset == pytest.approx(0.02 + noisy_scene - clean_mean, abs=0.002)
        # the estimate on another image size is the same spectrum on that grid
        assert psd.density((128, 200)).mean() == pytest.approx(psd.variance, rel=0.05)


def test_lags_shorter_than_the_noise_correlation_bias_the_bands():
    # the rule for max_lag: AR(1) streaks with ρ = 0.9 need lags far past 10 px (L = 16: > 10 % off)
    rng = np.random.default_rng(1)
    noise, truth = _cases(rng)["AR(1) streaks"]
    short = noise_psd.from_sets(noise, [np.zeros(SHAPE)], max_lag=16)
    assert np.abs(_band_errors(short.density(SHAPE), truth)).max() > 0.10


def test_psd_from_flat_background_when_there_is_one():
    # no clean set: the left half of each image is flat background, the right half texture; the flat
    # regions alone give the PSD (worse than from two sets: within 20 % per band here)
    rng = np.random.default_rng(2)
    from scipy import ndimage

    kernel = _gaussian_kernel(1.0, 2.0)
    images = []
    for _ in range(8):
        scene = np.full(SHAPE, 0.5)
        texture = ndimage.gaussian_filter(rng.standard_normal(SHAPE), 2.0)
        scene[:, 128:] += 0.5 * texture[:, 128:] / texture.std()
        images.append(scene + _filtered_noise(kernel, 0.05, SHAPE, rng))
    truth = 0.05**2 * np.abs(fft2(_embed(kernel, SHAPE))) ** 2
    psd = noise_psd.from_background(images)
    errors = _band_errors(psd.density(SHAPE), truth)
    assert np.abs(errors).max() < 0.20, errors.round(3)
    assert "flat regions" in psd.source


def test_no_background_and_bad_sets_are_one_line():
    rng = np.random.default_rng(3)
    with pytest.raises(PairlessError, match="clean set is empty"):
        noise_psd.from_sets([rng.random((64, 64))], [])
    with pytest.raises(PairlessError, match="too small"):
        noise_psd.from_sets([rng.random((40, 64))], [rng.random((64, 64))])
    with pytest.raises(PairlessError, match="vary less"):
        noise_psd.from_sets([np.zeros((64, 64))], [rng.random((64, 64))])


def _scene(rng, shape=(128, 128)):
    """Piecewise-smooth test image in [0.2, 0.8]: discs and bars on a gradient."""
    y, x = np.mgrid[: shape[0], : shape[1]] / shape[0]
    image = 0.3 + 0.2 * x
    for _ in range(6):
        cy, cx, r = rng.uniform(0.15, 0.85, 2).tolist() + [rng.uniform(0.05, 0.15)]
        image[(y - cy) ** 2 + (x - cx) ** 2 < r**2] = rng.uniform(0.2, 0.8)
    image[int(0.45 * shape[0]) : int(0.55 * shape[0]), :] += 0.15
    return image


def _psnr(a, b):
    return 10 * np.log10(1 / np.mean((a - b) ** 2))


@pytest.mark.slow
def test_bm3d_with_the_estimated_psd_beats_bm3d_with_a_white_sigma():
    pytest.importorskip("bm3d", reason="bm3d is an optional extra")
    rng = np.random.default_rng(4)
    kernel, shape = _gaussian_kernel(0.7, 3.0), (128, 128)
    truth = _scene(rng, shape)
    noisy = truth + _filtered_noise(kernel, 0.1, shape, rng)
    # the PSD comes from *other* images: a noisy set and an unpaired clean set of the same kind
    others = [_scene(rng, shape) for _ in range(12)]
    noisy_set = [im + _filtered_noise(kernel, 0.1, shape, rng) for im in others[:6]]
    psd = noise_psd.from_sets(noisy_set, others[6:])
    coloured = api.denoise(noisy.astype(np.float32), "bm3d", psd=psd)
    white = api.denoise(noisy.astype(np.float32), "bm3d", sigma=float(np.sqrt(psd.variance)))
    assert _psnr(coloured, truth) > _psnr(white, truth) + 0.5, (_psnr(coloured, truth), _psnr(white, truth))
    assert _psnr(coloured, truth) > _psnr(noisy, truth) + 2


def test_a_white_psd_is_bm3d_with_that_sigma():
    # the convention (sigma_psd = M·N·S on the image's DFT grid): a white spectrum of variance σ² must give
    # what BM3D gives with σ (not bit for bit: with an array, bm3d matches its thresholds to the PSD's shape)
    pytest.importorskip("bm3d", reason="bm3d is an optional extra")
    rng = np.random.default_rng(5)
    image = (_scene(rng, (64, 64)) + 0.1 * rng.standard_normal((64, 64))).astype(np.float32)
    acov = np.zeros((7, 7))
    acov[3, 3] = 0.1**2
    white = noise_psd.NoisePSD(acov)
    np.testing.assert_allclose(white.bm3d_psd((64, 64)), 64 * 64 * 0.01)
    assert _psnr(api.denoise(image, "bm3d", psd=white), api.denoise(image, "bm3d", sigma=0.1)) > 40


def test_cli_psd_auto_with_a_clean_folder_and_its_mistakes(tmp_path, capsys):
    pytest.importorskip("bm3d", reason="bm3d is an optional extra")
    import tifffile

    rng = np.random.default_rng(6)
    kernel = _gaussian_kernel(0.7, 2.0)
    (tmp_path / "clean").mkdir()
    for i in range(3):
        tifffile.imwrite(tmp_path / "clean" / f"{i}.tif", _scene(rng, (64, 64)).astype(np.float32))
    noisy = tmp_path / "noisy.tif"
    tifffile.imwrite(
        noisy,
        np.stack([_scene(rng, (64, 64)) + _filtered_noise(kernel, 0.1, (64, 64), rng) for _ in range(2)]),
    )
    out = tmp_path / "out"
    args = ["denoise", "bm3d", str(noisy), "--out", str(out), "--axes", "SYX"]
    assert main([*args, "--psd", "auto", "--psd-clean", str(tmp_path / "clean")]) == 0
    assert tifffile.imread(out / "noisy.tif").shape == (2, 64, 64)
    assert main(["denoise", "gaussian", str(noisy), "--out", str(tmp_path / "g"), "--psd", "auto"]) == 2
    assert "--psd is for bm3d" in capsys.readouterr().err
    assert main([*args[:-2], "--psd-clean", str(tmp_path / "clean")]) == 2
    assert "--psd auto" in capsys.readouterr().err
    assert main([*args, "--psd", "auto", "--sigma", "0.1"]) == 2
    assert "drop --sigma" in capsys.readouterr().err
