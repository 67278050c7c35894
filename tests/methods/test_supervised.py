"""Supervised references: DnCNN / RED-CNN / U-Net shapes and reach, orientation-preserving augmentation,
training lowers the loss, model-folder round trip, CLI; the linear-filter ceiling fitted with pairs."""

import numpy as np
import pytest
import torch

from pairless import api
from pairless.errors import PairlessError
from pairless.methods.supervised import SupervisedConfig, SupervisedModule, build_net
from pairless.nets.dncnn import DnCNN
from pairless.nets.redcnn import REDCNN
from pairless.training.patches import PairedPatches

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


def _reach_along_x(net: torch.nn.Module, width: int = 192) -> int:
    """How far (px, along x) the output still depends on one input pixel: the receptive field's half-width."""
    net.eval()
    x = torch.rand(1, 1, 64, width, requires_grad=True)
    net(x)[0, 0, 32, width // 2].backward()
    columns = torch.nonzero(x.grad[0, 0].abs().sum(dim=0) > 0).ravel()
    return int(columns.max() - width // 2)


def test_unet_option_sees_64_px_along_the_streaks_and_dncnn_does_not():
    quick = {arch: SupervisedConfig.for_profile("quick", arch=arch) for arch in ("dncnn", "unet")}
    assert 2 * _reach_along_x(build_net(quick["unet"])) + 1 >= 64  # depth 3: a 107-px window along x
    assert _reach_along_x(build_net(quick["dncnn"])) <= quick["dncnn"].depth  # one pixel per 3×3 layer


def test_quick_profile_trains_to_convergence_length():
    for arch in ("dncnn", "unet", "redcnn"):
        assert SupervisedConfig.for_profile("quick", arch=arch).steps >= 2500


def _transform_of(patch: np.ndarray, window: np.ndarray) -> str:
    for name, candidate in {
        "identity": window,
        "updown": window[::-1],
        "leftright": window[:, ::-1],
        "both": window[::-1, ::-1],
    }.items():
        if np.array_equal(patch, candidate):
            return name
    return "turned"  # a quarter turn (with or without a flip)


@pytest.mark.parametrize(
    "augment, allowed",
    [
        ("updown", {"identity", "updown"}),
        ("flips", {"identity", "updown", "leftright", "both"}),
        ("none", {"identity"}),
    ],
)
def test_orientation_preserving_augmentation_never_turns_a_patch(augment, allowed):
    image = np.arange(16 * 16, dtype=np.float32).reshape(
        16, 16
    )  # every pixel distinct: the transform is readable
    patches = PairedPatches([image], [image], patch=16, length=64, seed=0, augment=augment)
    seen = {_transform_of(patches[i][0][0].numpy(), image) for i in range(len(patches))}
    assert seen == allowed  # every allowed transform is drawn, nothing else
    dihedral = PairedPatches([image], [image], patch=16, length=64, seed=0, augment="dihedral")
    assert "turned" in {_transform_of(dihedral[i][0][0].numpy(), image) for i in range(64)}
    with pytest.raises(PairlessError, match="unknown augmentation"):
        PairedPatches([image], [image], patch=16, length=4, seed=0, augment="rot")


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
    torch.testing.assert_close(
        patches[3][0], PairedPatches([2 * clean[0] + 1], clean, patch=16, length=20, seed=0)[3][0]
    )


@pytest.mark.parametrize("arch", ["dncnn", "redcnn"])
def test_a_few_steps_lower_the_loss(arch):
    noisy, clean = _pairs()
    config = SupervisedConfig(arch=arch, **{**TINY, "lr": 3e-3})
    module = SupervisedModule(config, seed=0)
    batch = next(
        iter(
            torch.utils.data.DataLoader(PairedPatches(noisy, clean, patch=24, length=8, seed=0), batch_size=8)
        )
    )
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
    from pairless.methods import registry
    from pairless.training.modelio import read_model_folder

    noisy, clean = _pairs()
    noisy = [10 * x + 5 for x in noisy]  # any intensity units: the model maps back to them
    clean = [10 * y + 5 for y in clean]
    denoiser = api.fit(
        "supervised",
        noisy,
        clean=clean,
        out=tmp_path / "m",
        config=SupervisedConfig(**TINY),
        arch="dncnn",
        progress=False,
    )
    config, _ = read_model_folder(tmp_path / "m", methods=registry.names(*registry.LEARNED))
    assert config["method"] == "supervised" and config["supervised"]["arch"] == "dncnn"
    assert config["value_range"] == pytest.approx([5.0, 15.0], abs=1e-4)
    loaded = registry.load_model(tmp_path / "m", tile=32, overlap=8)
    assert loaded.spatial_ndim == 2
    a = denoise_array(noisy[0], denoiser, axes="YX")
    b = denoise_array(noisy[0], loaded, axes="YX")
    assert a.shape == noisy[0].shape and np.isfinite(a).all()
    np.testing.assert_allclose(a, b, atol=0.05)  # tiles vs. whole image, bf16 where the CPU has it
    assert abs(np.median(a) - np.median(clean[0])) < 2  # back in the data's units, not the network's [0, 1]


def test_unet_fit_round_trip(tmp_path):
    from pairless.denoiser import denoise_array

    noisy, clean = _pairs(shape=(48, 52))
    config = SupervisedConfig(
        arch="unet",
        channels=4,
        depth=2,
        patch_size=32,
        batch_size=4,
        steps=4,
        val_every=2,
        val_batches=1,
        augment="updown",
    )
    denoiser = api.fit(
        "supervised", noisy, clean=clean, out=tmp_path / "u", config=config, arch="unet", progress=False
    )
    out = denoise_array(noisy[0], denoiser, axes="YX")  # 48×52 is no multiple of 4: padded inside
    assert out.shape == noisy[0].shape and np.isfinite(out).all()
    with pytest.raises(PairlessError, match="multiple of 4"):
        api.fit(
            "supervised",
            noisy,
            clean=clean,
            out=tmp_path / "v",
            config=config.model_copy(update={"patch_size": 30}),
            arch="unet",
            progress=False,
        )


def _streaky(n=6, shape=(64, 96), seed=0):
    """Smooth images plus noise correlated along x (AR(1) rows), the case a wide linear filter is for."""
    from scipy import ndimage, signal

    rng = np.random.default_rng(seed)
    clean = [ndimage.gaussian_filter(rng.random(shape), 3) for _ in range(n)]
    clean = [((c - c.min()) / (c.max() - c.min())).astype(np.float32) for c in clean]
    noise = [
        signal.lfilter([1.0], [1.0, -0.95], rng.normal(0, 0.03, shape), axis=1) + rng.normal(0, 0.02, shape)
        for _ in range(n)
    ]
    return [(c + e).astype(np.float32) for c, e in zip(clean, noise)], clean


def test_linear_filter_fitted_with_pairs_beats_every_gaussian_filter():
    from pairless.methods.classical import gaussian
    from pairless.methods.wiener import fit_linear_filter
    from pairless.metrics.image import psnr

    noisy, clean = _streaky(n=8)
    ceiling = fit_linear_filter(noisy[:6], clean[:6], support=(9, 41))
    test = list(zip(noisy[6:], clean[6:]))
    score = np.mean([psnr(ceiling.apply(x), y, data_range=1.0) for x, y in test])
    best_gaussian = max(
        np.mean([psnr(gaussian(x, sigma=s), y, data_range=1.0) for x, y in test])
        for s in (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
    )
    assert score > best_gaussian + 0.5
    assert score > np.mean([psnr(x, y, data_range=1.0) for x, y in test]) + 2


def test_linear_filter_of_identical_pairs_is_the_identity():
    from pairless.denoiser import denoise_array
    from pairless.methods.wiener import fit_linear_filter

    _, clean = _streaky(n=3)
    identity = fit_linear_filter(clean, clean, support=(5, 9))
    centre = np.zeros((5, 9))
    centre[2, 4] = 1.0
    np.testing.assert_allclose(identity.kernel, centre, atol=5e-3)  # the ridge shrinks it a little
    np.testing.assert_allclose(denoise_array(clean[0], identity, axes="YX"), clean[0], atol=5e-3)
    with pytest.raises(PairlessError, match="odd"):
        fit_linear_filter(clean, clean, support=(4, 9))


def test_mismatched_pairs_are_refused():
    noisy, clean = _pairs(2)
    with pytest.raises(PairlessError, match="same non-zero number"):
        api.fit("supervised", noisy, clean=clean[:1], arch="dncnn", out="unused", progress=False)
    with pytest.raises(PairlessError, match="same 2D"):
        api.fit("supervised", [noisy[0][:, :30]], clean=clean[:1], arch="dncnn", out="unused", progress=False)
    with pytest.raises(PairlessError, match="unknown architecture"):
        api.fit("supervised", noisy, clean=clean, arch="resnet", out="unused", progress=False)


def test_cli_names_unmatched_files(tmp_path, capsys):
    import tifffile

    from pairless.cli import main

    noisy, clean = _pairs(2)
    for folder, images, names in (("noisy", noisy, ["a", "b"]), ("clean", clean, ["a", "c"])):
        (tmp_path / folder).mkdir()
        for name, image in zip(names, images):
            tifffile.imwrite(tmp_path / folder / f"{name}.tif", image)
    code = main(
        [
            "fit",
            "supervised",
            "--noisy",
            str(tmp_path / "noisy"),
            "--clean",
            str(tmp_path / "clean"),
            "--arch",
            "dncnn",
            "--out",
            str(tmp_path / "model"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "b (noisy)" in err and "c (clean)" in err
    assert not (tmp_path / "model").exists()
