"""Image metrics against scikit-image, and their masks and errors."""

import numpy as np
import pytest
from skimage import metrics as sk

from pairless import PairlessError
from pairless.metrics import nrmse, psnr, si_psnr, ssim


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    reference = rng.random((48, 53)) * 3.0 - 1.0
    image = reference + 0.2 * rng.standard_normal(reference.shape)
    return image, reference


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_psnr_matches_skimage(pair, dtype):
    image, reference = (a.astype(dtype) for a in pair)
    expected = sk.peak_signal_noise_ratio(reference, image, data_range=4.0)
    assert psnr(image, reference, data_range=4.0) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("normalization", ["euclidean", "min-max", "mean"])
def test_nrmse_matches_skimage(pair, normalization):
    image, reference = pair
    reference = reference + 2.0  # keep the mean away from zero for the 'mean' normalisation
    image = image + 2.0
    expected = sk.normalized_root_mse(reference, image, normalization=normalization)
    assert nrmse(image, reference, normalization=normalization) == pytest.approx(expected, abs=1e-6)


def test_ssim_matches_skimage_default_and_gaussian(pair):
    image, reference = pair
    default = sk.structural_similarity(reference, image, data_range=4.0)
    wang = sk.structural_similarity(
        reference, image, data_range=4.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert ssim(image, reference, data_range=4.0) == pytest.approx(default, abs=1e-6)
    assert ssim(image, reference, data_range=4.0, gaussian=True) == pytest.approx(wang, abs=1e-6)
    assert default != pytest.approx(wang, abs=1e-4)  # the two windows really differ


def test_ssim_3d_matches_skimage():
    rng = np.random.default_rng(1)
    reference = rng.random((9, 20, 21))
    image = reference + 0.1 * rng.standard_normal(reference.shape)
    assert ssim(image, reference, data_range=1.0) == pytest.approx(
        sk.structural_similarity(reference, image, data_range=1.0), abs=1e-6
    )


def test_mask_restricts_the_average(pair):
    image, reference = pair
    image = image.copy()
    mask = np.zeros(image.shape, bool)
    mask[10:30, 10:30] = True
    image[~mask] += 5.0  # huge errors outside the mask must not count
    inside = psnr(image[mask], reference[mask], data_range=4.0)
    assert psnr(image, reference, data_range=4.0, mask=mask) == pytest.approx(inside)
    assert psnr(image, reference, data_range=4.0) < inside - 10
    assert ssim(image, reference, data_range=4.0, mask=mask) > ssim(image, reference, data_range=4.0)


def test_full_mask_equals_no_mask(pair):
    image, reference = pair
    full = np.ones(image.shape, bool)
    assert ssim(image, reference, data_range=4.0, mask=full) == pytest.approx(
        ssim(image, reference, data_range=4.0), abs=1e-12
    )
    assert nrmse(image, reference, mask=full) == pytest.approx(nrmse(image, reference))


def test_si_psnr_ignores_affine_miscalibration(pair):
    image, reference = pair
    rescaled = 3.0 * image - 7.0
    assert si_psnr(rescaled, reference, data_range=4.0) == pytest.approx(
        si_psnr(image, reference, data_range=4.0), abs=1e-9
    )
    assert si_psnr(rescaled, reference, data_range=4.0) > psnr(rescaled, reference, data_range=4.0) + 10


def test_identical_images_give_infinite_psnr_and_zero_nrmse(pair):
    _, reference = pair
    assert psnr(reference, reference, data_range=1.0) == float("inf")
    assert nrmse(reference, reference) == 0.0
    assert ssim(reference, reference, data_range=4.0) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda a, r: psnr(a[:, :-1], r, data_range=1.0), "shape"),
        (lambda a, r: psnr(a, r, data_range=0.0), "data_range"),
        (lambda a, r: psnr(a, r, data_range=None), "data_range"),
        (lambda a, r: psnr(np.where(a > 0, np.nan, a), r, data_range=1.0), "NaN"),
        (lambda a, r: nrmse(a, r, normalization="max"), "normalization"),
        (lambda a, r: psnr(a, r, data_range=1.0, mask=np.zeros(a.shape)), "mask"),
        (lambda a, r: ssim(a[:5, :5], r[:5, :5], data_range=1.0), "at least 7"),
    ],
)
def test_bad_input_raises_a_clear_error(pair, call, words):
    image, reference = pair
    with pytest.raises(PairlessError, match=words):
        call(image, reference)
