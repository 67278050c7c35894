"""The prior: its training recipe (tiny), the shipped weights and their provenance, zero-shot denoising
calibrated per image, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from skimage import data

from pairless import api
from pairless.cli import main
from pairless.errors import PairlessError
from pairless.io import read_image
from pairless.methods.prior import CalibratedPrior, PriorConfig, PriorDenoiser
from pairless.methods.prior.calibrated import Calibration, calibrate
from pairless.methods.prior.recipe import NoisyPatches
from pairless.metrics.image import psnr
from pairless.nets.prior_net import PriorNet
from pairless.noise import PoissonGaussian

pytestmark = pytest.mark.usefixtures("one_thread")


def _clean_folder(folder, count=6, side=64, seed=0):
    """Smooth blobs and edges (8-bit PNGs): a clean set a tiny prior can learn in seconds."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    folder.mkdir()
    for i in range(count):
        image = np.zeros((side, side))
        for _ in range(4):
            cy, cx, r = rng.uniform(0, side, 2).tolist() + [rng.uniform(6, 20)]
            image += rng.uniform(0.2, 0.6) * ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r)
        PILImage.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(folder / f"{i:02d}.png")
    return folder


def _camera(side=256, sigma=20.0, seed=0):
    x = data.camera()[128 : 128 + side, 128 : 128 + side].astype(np.float32)
    return x, (x + sigma * np.random.default_rng(seed).standard_normal(x.shape)).astype(np.float32)


def test_tiny_pretraining_beats_the_input_at_several_noise_levels_with_one_model(tmp_path):
    folder = _clean_folder(tmp_path / "clean")
    prior = api.pretrain(
        {"mine": folder},
        out=tmp_path / "prior",
        profile="tiny",
        progress=False,
        widths=(8, 16),
        steps=120,
        val_every=60,
        batch_size=8,
        patch_size=32,
        lr=3e-3,
        precision="32-true",
    )
    clean = _clean_folder(tmp_path / "test", count=1, seed=7)
    x = read_image(clean / "00.png", axes="YX").data.astype(np.float32)
    for sigma in (10.0, 25.0, 50.0):
        y = (x + sigma * np.random.default_rng(1).standard_normal(x.shape)).astype(np.float32)
        out = api.denoise(y, prior, axes="YX")
        assert psnr(x, out, data_range=255) > psnr(x, y, data_range=255) + 1, sigma


def test_a_finished_pretraining_given_more_steps_continues_it(tmp_path):
    folder = _clean_folder(tmp_path / "clean", count=3)
    settings = dict(profile="tiny", progress=False, precision="32-true")
    api.pretrain({"mine": folder}, out=tmp_path / "prior", steps=2, val_every=2, **settings)
    api.pretrain({"mine": folder}, out=tmp_path / "prior", steps=4, val_every=2, **settings)
    log = (tmp_path / "prior" / "training_log.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in log[1:]] == ["2", "4"]  # step 2 was not trained again


def test_the_recipe_refuses_a_folder_without_its_files(tmp_path):
    folder = _clean_folder(tmp_path / "clean", count=2)
    with pytest.raises(PairlessError, match="natural set needs test_"):
        api.pretrain({"natural": folder}, out=tmp_path / "prior", profile="tiny", progress=False)


def test_training_batches_have_the_noise_their_sigma_map_says():
    """Gaussian patches: the noise's std matches the σ map; Poisson-Gaussian: the map is √(a·ū + b)."""
    x = np.full((64, 64), 0.5, np.float32)
    config = PriorConfig(batch_size=64, patch_size=32, pg_fraction=0.0, sigma_max=0.2)
    y, clean, sigma = NoisyPatches({"flat": [x]}, config, length=1, seed=0)[0]
    residual_std = (y - clean).flatten(1).std(1)
    assert torch.allclose(residual_std, sigma.flatten(1).mean(1), rtol=0.1, atol=2e-3)
    assert NoisyPatches({"flat": [x]}, config, length=1, seed=0)[0][0].equal(y)  # seeded by (seed, idx)


def test_shipped_weights_load_through_the_safe_loader_and_match_their_provenance():
    from pairless.methods.prior.shipped import load_shipped, provenance_digest, shipped_digest

    config, weights = load_shipped()
    assert config["method"] == "prior"
    assert shipped_digest() == provenance_digest()
    net = PriorNet(widths=tuple(config["prior"]["widths"]), blocks=config["prior"]["blocks"])
    net.load_state_dict(weights)  # every tensor the network has, and only those


def test_zero_shot_on_gaussian_noise_of_unknown_sigma_beats_the_input_by_6_db():
    x, y = _camera(sigma=20.0)
    prior = api.load("prior")
    out = api.denoise(y, prior, axes="YX")
    assert psnr(x, out, data_range=255) > psnr(x, y, data_range=255) + 6
    (model,) = prior.noise_models
    assert model.a == 0 and abs(np.sqrt(model.b) / 20.0 - 1) < 0.1


def test_zero_shot_is_equivariant_to_the_images_intensity_units():
    """Calibration takes any affine intensity scale to the same prior units, so units do not matter."""
    _, y = _camera(side=128)
    prior = api.load("prior", sigma=20.0)
    out = api.denoise(y, prior, axes="YX")
    scaled = api.load("prior", sigma=20.0 * 40)
    out_scaled = api.denoise(y * 40 + 1000, scaled, axes="YX")
    np.testing.assert_allclose((out_scaled - 1000) / 40, out, atol=0.05 * 20)


def test_signal_dependent_noise_goes_through_the_fitted_gat_and_beats_a_gaussian_sigma():
    """Poisson noise: the GAT route (the default) must beat the prior fed one Gaussian σ for the image."""
    x = data.camera()[128:384, 128:384].astype(np.float32) / 255 * 60 + 2
    y = np.random.default_rng(0).poisson(x).astype(np.float32)
    gat = api.denoise(y, api.load("prior"), axes="YX")
    flat = api.denoise(y, api.load("prior", noise="gaussian"), axes="YX")
    assert psnr(x, gat, data_range=60) > psnr(x, flat, data_range=60)


def test_calibration_maps_the_noise_model_into_prior_units():
    image = np.linspace(100, 1100, 64 * 64).reshape(64, 64)
    c = calibrate(image, PoissonGaussian(2.0, 50.0))
    u = c.gain * image + c.offset
    assert u.min() == pytest.approx(0, abs=0.02) and u.max() == pytest.approx(1, abs=0.02)
    # the variance of x at each intensity, scaled by gain², is the prior-unit model at u
    np.testing.assert_allclose(c.gain**2 * (2.0 * image + 50.0), c.a * u + c.b, rtol=1e-9)


def test_a_calibrated_prior_keeps_its_calibration_in_its_state_dict():
    net = PriorNet(widths=(4, 8))
    module = CalibratedPrior(net, Calibration(0.5, 0.1, 0.01, 0.002))
    again = CalibratedPrior(PriorNet(widths=(4, 8)))
    again.load_state_dict(module.state_dict())
    assert again.calibration == module.calibration
    x = torch.rand(1, 1, 16, 16)
    assert torch.equal(again(x), module(x))


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(sigma=-1.0), "positive finite"),
        (dict(vst="spline"), "unknown --vst"),
        (dict(noise="laplace"), "unknown noise model"),
        (dict(adapt=0.0), "positive time budget"),
    ],
)
def test_bad_prior_settings_give_one_line(options, match):
    with pytest.raises(PairlessError, match=match) as err:
        api.load("prior", **options)
    assert "\n" not in str(err.value)


def test_a_sigma_map_of_the_wrong_shape_is_refused():
    prior = PriorDenoiser(CalibratedPrior(PriorNet(widths=(4, 8))))
    with pytest.raises(PairlessError, match="σ map has shape"):
        prior(torch.rand(1, 1, 32, 32), sigma=torch.rand(1, 1, 16, 16))
    with pytest.raises(PairlessError, match="negative"):
        prior(torch.rand(1, 1, 32, 32), sigma=-torch.ones(1, 1, 32, 32))


def test_prior_options_are_refused_for_other_denoisers():
    with pytest.raises(PairlessError, match="for the prior"):
        api.load("bm3d", adapt=10.0)
    with pytest.raises(PairlessError, match="for the prior"):
        api.load("nlm", vst="learned")


def test_cli_denoise_prior_and_its_bad_input(tmp_path, capsys):
    _, y = _camera(side=64)
    np.save(tmp_path / "noisy.npy", y)
    assert main(["denoise", "prior", str(tmp_path / "noisy.npy"), "--out", str(tmp_path / "out")]) == 0
    assert np.load(tmp_path / "out" / "noisy.npy").shape == y.shape
    capsys.readouterr()
    assert (
        main(
            ["denoise", "prior", str(tmp_path / "noisy.npy"), "--out", str(tmp_path / "o2"), "--sigma", "-3"]
        )
        == 2
    )
    assert (
        main(
            [
                "denoise",
                "prior",
                str(tmp_path / "noisy.npy"),
                "--out",
                str(tmp_path / "o3"),
                "--adapt",
                "soon",
            ]
        )
        == 2
    )
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and "positive" in errors[0] and "duration" in errors[1]
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()
