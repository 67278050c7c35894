"""The prior fine-tuned by a self-supervised loss: ``--init prior`` starts as the zero-shot prior and its
model folder reloads to the trained model without the shipped prior; test-time adaptation beats the
zero-shot prior on an image unlike its training data, is reproducible for a seed and leaves the given
prior alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pairless import api
from pairless.denoiser import denoise_array
from pairless.methods import registry
from pairless.methods.ne2ne import Ne2Ne, Ne2NeConfig
from pairless.methods.prior import CalibratedPrior, finetune, shipped_net
from pairless.methods.prior.adapt import adapt
from pairless.methods.prior.calibrated import calibrate, measure_noise
from pairless.metrics.image import psnr
from pairless.nets.prior_net import PriorNet
from pairless.training import selfsup

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_FIT = dict(steps=2, val_every=1, batch_size=2, patch_size=32, precision="32-true")


def _scene(seed: int, shape=(64, 64), sigma=0.08) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[: shape[0], : shape[1]]
    clean = (0.5 + 0.3 * np.sin(x / 5.0 + seed) * np.cos(y / 7.0)).astype(np.float32)
    return clean, (clean + np.random.default_rng(seed).normal(0, sigma, shape)).astype(np.float32)


def _stripes(shape=(96, 96), sigma=0.2) -> tuple[np.ndarray, np.ndarray]:
    """Fine high-contrast bars (period 4 px) under strong noise: unlike the prior's natural, fluorescence and
    EM images, where such texture is rare and a denoiser trained on them smooths it away."""
    _, x = np.mgrid[: shape[0], : shape[1]]
    clean = np.where((x // 2) % 2 == 0, 0.2, 0.8).astype(np.float32)
    return clean, (clean + np.random.default_rng(0).normal(0, sigma, shape)).astype(np.float32)


def test_init_prior_starts_as_the_zero_shot_prior_calibrated_to_the_training_images():
    _, noisy = _scene(0)
    objective = Ne2Ne(Ne2NeConfig.for_profile("quick", init="prior"))
    mean, std = selfsup.mean_std([noisy[None]])
    objective.prepare([noisy[None]], mean=mean, std=std)
    net = objective.make_net().eval()
    assert isinstance(net, CalibratedPrior)
    zero_shot = CalibratedPrior(shipped_net(), calibrate(noisy, measure_noise(noisy))).eval()
    x = torch.from_numpy(noisy)[None, None]
    with torch.no_grad():
        started = net((x - mean) / std) * std + mean
        expected = zero_shot(x)
    torch.testing.assert_close(started, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["ne2ne", "r2r"])
def test_an_init_prior_model_folder_reloads_to_the_trained_model_without_the_shipped_prior(
    method, tmp_path, monkeypatch
):
    images = [_scene(i)[1] for i in range(3)]
    fitted = api.fit(method, images, out=tmp_path / "m", axes="YX", progress=False, init="prior", **TINY_FIT)
    assert isinstance(fitted.net, CalibratedPrior)  # r2r too: the prior is told σ, so no averaged draws

    def no_prior(*args, **kwargs):
        raise AssertionError("a model folder must not read the prior it started from")

    monkeypatch.setattr(finetune, "read_prior", no_prior)
    loaded = registry.load_model(tmp_path / "m")
    assert isinstance(loaded.net, CalibratedPrior)
    assert set(loaded.net.state_dict()) == set(fitted.net.state_dict()) >= {"gain", "offset", "a", "b"}
    np.testing.assert_array_equal(
        denoise_array(images[0], loaded, axes="YX"), denoise_array(images[0], fitted, axes="YX")
    )
    assert registry.get(method).cite({"init": "prior"})[-1].doi == "10.1109/TPAMI.2021.3088914"


def test_adapting_the_prior_to_an_image_unlike_its_training_data_beats_the_zero_shot_prior():
    clean, noisy = _stripes()
    prior = CalibratedPrior(shipped_net(), calibrate(noisy, measure_noise(noisy))).eval()
    x = torch.from_numpy(noisy)[None, None]
    adapted = adapt(prior, x, steps=60, seed=0, patch=32, batch=4, lr=3e-4, val_every=10)
    with torch.no_grad():
        before = psnr(prior(x)[0, 0].numpy(), clean, data_range=1.0)
        after = psnr(adapted(x)[0, 0].numpy(), clean, data_range=1.0)
    assert after > before + 0.5, (before, after)


def _tiny_prior(noisy: np.ndarray) -> CalibratedPrior:
    torch.manual_seed(0)
    return CalibratedPrior(PriorNet(widths=(4, 8)), calibrate(noisy, measure_noise(noisy))).eval()


@pytest.mark.parametrize("loss", ["r2r", "ne2ne"])
def test_adapt_with_steps_is_reproducible_and_leaves_the_given_prior_alone(loss):
    _, noisy = _scene(1)
    prior = _tiny_prior(noisy)
    before = {k: v.clone() for k, v in prior.state_dict().items()}
    x = torch.from_numpy(noisy)[None, None]
    runs = [adapt(prior, x, steps=6, seed=3, loss=loss, patch=32, batch=2, val_every=2) for _ in range(2)]
    first, second = (r.state_dict() for r in runs)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert all(torch.equal(before[k], v) for k, v in prior.state_dict().items())
    assert runs[0] is not prior and runs[0].calibration == prior.calibration


def test_adapt_keeps_the_prior_when_training_only_makes_it_worse():
    _, noisy = _scene(2)
    prior = _tiny_prior(noisy)
    history: list = []
    adapted = adapt(
        prior, torch.from_numpy(noisy)[None, None], steps=4, seed=0, lr=10.0, val_every=2, history=history
    )
    assert history[0][0] == 0 and not any(h[1] < history[0][1] for h in history[1:])  # a rate that only hurts
    assert adapted.best_step == 0
    assert all(torch.equal(prior.state_dict()[k], v) for k, v in adapted.state_dict().items())
