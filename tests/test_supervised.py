"""Supervised references: DnCNN / RED-CNN shapes, training lowers the loss, model-folder round trip, CLI."""

import numpy as np
import pytest
import torch

from pairless.config import SupervisedConfig
from pairless.errors import PairlessError
from pairless.methods.supervised import PairedPatches, SupervisedModule, fit_supervised
from pairless.nets.dncnn import DnCNN
from pairless.nets.redcnn import REDCNN

TINY = dict(channels=8, depth=4, patch_size=24, batch_size=4, steps=6, val_every=3, val_batches=1)


def _pairs(n=4, shape=(40, 44), seed=0):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    clean = [ndimage.gaussian_filter(rng.random(shape), 2).astype(np.float32) for _ in range(n)]
    clean = [(c - c.min()) / (c.max() - c.min()) for c in clean]
    noisy = [(c + rng.normal(0, 0.2, shape)).astype(np.float32) for c in clean]
    return noisy, clean


@pytest.mark.parametrize("net", [DnCNN(depth=5, channels=8), REDCNN(channels=8)])
def test_output_shape_equals_input_shape(net):
    for shape in [(2, 1, 37, 31), (1, 1, 64, 64)]:
        assert net(torch.rand(shape)).shape == shape


def test_dncnn_is_residual():
    net = DnCNN(depth=4, channels=8)
    torch.nn.init.zeros_(net.body[-1].weight)
    torch.nn.init.zeros_(net.body[-1].bias)
    x = torch.rand(1, 1, 20, 20)
    torch.testing.assert_close(net(x), x)  # a zero noise estimate returns the input


def test_paired_patches_stay_aligned_under_augmentation():
    rng = np.random.default_rng(1)
    clean = [rng.random((30, 34)).astype(np.float32)]
    patches = PairedPatches([2 * clean[0] + 1], clean, patch=16, length=20, seed=0)
    for i in range(len(patches)):
        noisy, target = patches[i]
        assert noisy.shape == target.shape == (1, 16, 16)
        torch.testing.assert_close(noisy, 2 * target + 1)
    torch.testing.assert_close(patches[3][0], PairedPatches([2 * clean[0] + 1], clean, patch=16, length=20, seed=0)[3][0])


@pytest.mark.parametrize("arch", ["dncnn", "redcnn"])
def test_a_few_steps_lower_the_loss(arch):
    noisy, clean = _pairs()
    config = SupervisedConfig(arch=arch, **{**TINY, "lr": 3e-3})
    module = SupervisedModule(config, seed=0)
    batch = next(iter(torch.utils.data.DataLoader(PairedPatches(noisy, clean, patch=24, length=8, seed=0), batch_size=8)))
    optimizer = module.configure_optimizers()["optimizer"]
    with torch.no_grad():
        before = module.loss(batch).item()
    for _ in range(15):
        optimizer.zero_grad()
        module.loss(batch).backward()
        optimizer.step()
    with torch.no_grad():
        after = module.loss(batch).item()
    assert after < 0.8 * before


def test_fit_and_load_round_trip(tmp_path):
    from pairless.denoiser import denoise_array
    from pairless.modelio import load_denoiser, read_model_folder

    noisy, clean = _pairs()
    noisy = [10 * x + 5 for x in noisy]  # any intensity units: the model maps back to them
    clean = [10 * y + 5 for y in clean]
    denoiser = fit_supervised(noisy, clean, arch="dncnn", out=tmp_path / "m", config=SupervisedConfig(**TINY),
                              progress=False)
    config, _ = read_model_folder(tmp_path / "m")
    assert config["method"] == "supervised" and config["supervised"]["arch"] == "dncnn"
    assert config["value_range"] == pytest.approx([5.0, 15.0], abs=1e-4)
    loaded = load_denoiser(tmp_path / "m", tile=32, overlap=8)
    assert loaded.spatial_ndim == 2
    a = denoise_array(noisy[0], denoiser, axes="YX")
    b = denoise_array(noisy[0], loaded, axes="YX")
    assert a.shape == noisy[0].shape and np.isfinite(a).all()
    np.testing.assert_allclose(a, b, atol=0.05)  # tiles vs. whole image, bf16 where the CPU has it
    assert abs(np.median(a) - np.median(clean[0])) < 2  # back in the data's units, not the network's [0, 1]


def test_mismatched_pairs_are_refused():
    noisy, clean = _pairs(2)
    with pytest.raises(PairlessError, match="same non-zero number"):
        fit_supervised(noisy, clean[:1], arch="dncnn", out="unused", progress=False)
    with pytest.raises(PairlessError, match="same 2D"):
        fit_supervised([noisy[0][:, :30]], clean[:1], arch="dncnn", out="unused", progress=False)
    with pytest.raises(PairlessError, match="unknown architecture"):
        fit_supervised(noisy, clean, arch="unet", out="unused", progress=False)


def test_cli_names_unmatched_files(tmp_path, capsys):
    import tifffile

    from pairless.cli import main

    noisy, clean = _pairs(2)
    for folder, images, names in (("noisy", noisy, ["a", "b"]), ("clean", clean, ["a", "c"])):
        (tmp_path / folder).mkdir()
        for name, image in zip(names, images):
            tifffile.imwrite(tmp_path / folder / f"{name}.tif", image)
    code = main(["fit", "supervised", "--noisy", str(tmp_path / "noisy"), "--clean", str(tmp_path / "clean"),
                 "--arch", "dncnn", "--out", str(tmp_path / "model")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "b (noisy)" in err and "c (clean)" in err
    assert not (tmp_path / "model").exists()
