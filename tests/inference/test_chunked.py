"""Out-of-core denoising: block by block with a halo equals denoising the whole volume, in bounded memory."""

import numpy as np
import pytest
import tifffile
import torch
import zarr

from pairless.cli import main
from pairless.denoiser import denoise_array
from pairless.errors import PairlessError
from pairless.inference import chunked
from pairless.inference.chunked import denoise_chunked
from pairless.methods import n2v, registry
from pairless.methods.classical import make_classical
from pairless.methods.n2v import N2VConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _zarr(path, data, *, chunks, **attributes):
    array = zarr.create_array(
        store=str(path), shape=data.shape, chunks=chunks, dtype=data.dtype, attributes=attributes
    )
    array[:] = data
    return path


@pytest.fixture
def volume():
    return np.random.default_rng(0).normal(100, 20, (21, 45, 38)).astype(np.float32)


def test_chunked_equals_in_memory_when_the_halo_covers_the_filter(tmp_path, volume):
    # source chunks deliberately unlike the blocks; blocks do not divide the shape
    source = _zarr(tmp_path / "v.zarr", volume, chunks=(7, 20, 20), axes="ZYX", voxel_size=[2.0, 1.0, 1.0])
    gaussian = make_classical("gaussian", sigma=1.5)  # support 4σ = 6 voxels < halo
    target = denoise_chunked(source, tmp_path / "out" / "v.zarr", gaussian, block=8, halo=7)
    out = zarr.open(str(target), mode="r")
    assert out.dtype == np.float32 and out.shape == volume.shape and out.chunks == (8, 8, 8)
    assert dict(out.attrs) == {"voxel_size": [2.0, 1.0, 1.0], "axes": "ZYX"}
    np.testing.assert_allclose(out[:], denoise_array(volume, gaussian, axes="ZYX"), rtol=1e-6, atol=1e-4)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["v.zarr"]  # no temporary left


def test_a_halo_smaller_than_the_filter_shows_at_block_borders_only(tmp_path, volume):
    source = _zarr(tmp_path / "v.zarr", volume, chunks=(8, 16, 16))
    gaussian = make_classical("gaussian", sigma=1.0)
    out = zarr.open(str(denoise_chunked(source, tmp_path / "o.zarr", gaussian, block=16, halo=0)), mode="r")[
        :
    ]
    diff = np.abs(out - denoise_array(volume, gaussian, axes="ZYX"))
    assert diff.max() > 1.0
    far = np.ones(volume.shape, bool)  # voxels over 4σ from every inner block border
    for axis, n in enumerate(volume.shape):
        index = np.arange(n)
        near = np.zeros(n, bool)
        for border in range(16, n, 16):
            near |= np.abs(index + 0.5 - border) < 4.5
        far &= ~near.reshape([-1 if a == axis else 1 for a in range(3)])
    assert far.any() and diff[far].max() < 1e-3


def test_memory_is_bounded_by_the_block(tmp_path, volume, monkeypatch):
    sizes = []
    original = chunked.denoise_array

    def spy(region, *args, **kwargs):
        sizes.append(region.size)
        return original(region, *args, **kwargs)

    monkeypatch.setattr(chunked, "denoise_array", spy)
    source = _zarr(tmp_path / "v.zarr", volume, chunks=(8, 16, 16))
    denoise_chunked(source, tmp_path / "o.zarr", make_classical("median", size=3), block=8, halo=2)
    assert len(sizes) == 3 * 6 * 5 and max(sizes) <= 12**3 < volume.size / 10


def test_tiff_pages_and_separate_images(tmp_path, volume):
    tifffile.imwrite(tmp_path / "v.tif", volume)
    gaussian = make_classical("gaussian", sigma=1.0)
    out = zarr.open(
        str(denoise_chunked(tmp_path / "v.tif", tmp_path / "t.zarr", gaussian, axes="ZYX", block=16))
    )
    np.testing.assert_allclose(out[:], denoise_array(volume, gaussian, axes="ZYX"), rtol=1e-6, atol=1e-4)
    # as a stack of separate 2D images (S): no halo across S, one image per block along it
    out = zarr.open(
        str(denoise_chunked(tmp_path / "v.tif", tmp_path / "s.zarr", gaussian, axes="SYX", block=16))
    )
    assert out.chunks == (1, 16, 16)
    np.testing.assert_allclose(out[:], denoise_array(volume, gaussian, axes="SYX"), rtol=1e-6, atol=1e-4)


def test_a_network_with_a_halo_beyond_its_receptive_field_matches_whole_image_prediction(tmp_path):
    config = N2VConfig(depth=1, filters=4, precision="32-true")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = n2v.N2V(config).make_net()
        for module in net.modules():  # non-trivial batch-norm statistics, folded at prediction
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    model = registry.get("n2v").load(
        {"method": "n2v", **config.model_dump(), "normalisation": {"mean": 10.0, "std": 3.0}},
        net.state_dict(),
        tile=256,
        overlap=32,
    )
    image = np.random.default_rng(1).normal(10, 3, (150, 170)).astype(np.float32)
    source = _zarr(tmp_path / "i.zarr", image, chunks=(64, 64))
    out = zarr.open(str(denoise_chunked(source, tmp_path / "o.zarr", model, block=64, halo=32)))[:]
    np.testing.assert_allclose(out, denoise_array(image, model, axes="YX"), rtol=1e-4, atol=1e-4)


def test_bad_requests_fail_cleanly_and_leave_nothing(tmp_path, volume):
    source = _zarr(tmp_path / "v.zarr", volume, chunks=(8, 16, 16))
    gaussian = make_classical("gaussian", sigma=1.0)
    with pytest.raises(PairlessError, match="overwrite the input"):
        denoise_chunked(source, source, gaussian)
    with pytest.raises(PairlessError, match=r"\.zarr folder"):
        denoise_chunked(source, tmp_path / "o.tif", gaussian)
    with pytest.raises(PairlessError, match="per block"):
        denoise_chunked(source, tmp_path / "o.zarr", make_classical("gaussian", auto=True))
    with pytest.raises(PairlessError, match="one positive edge per axis"):
        denoise_chunked(source, tmp_path / "o.zarr", gaussian, block=(4, 4))
    zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    with pytest.raises(PairlessError, match="group"):
        denoise_chunked(tmp_path / "g.zarr", tmp_path / "o.zarr", gaussian)
    np.save(tmp_path / "v.npy", volume)
    with pytest.raises(PairlessError, match="reads .zarr"):
        denoise_chunked(tmp_path / "v.npy", tmp_path / "o.zarr", gaussian)
    broken = volume.copy()
    broken[-1, -1, -1] = np.nan  # in the very last block: everything before it was already written
    with pytest.raises(PairlessError, match="NaN"):
        denoise_chunked(
            _zarr(tmp_path / "nan.zarr", broken, chunks=(8, 16, 16)),
            tmp_path / "out" / "o.zarr",
            gaussian,
            block=8,
        )
    assert list((tmp_path / "out").iterdir()) == []


def test_cli_denoises_zarr_out_of_core_beside_in_memory_inputs(tmp_path, volume, capsys):
    source = _zarr(tmp_path / "big.zarr", volume, chunks=(8, 16, 16))
    np.save(tmp_path / "small.npy", volume[0])
    args = [
        "denoise",
        "gaussian",
        str(source),
        str(tmp_path / "small.npy"),
        "--out",
        str(tmp_path / "d"),
        "--sigma",
        "1",
    ]
    assert main([*args, "--block", "16", "--halo", "8"]) == 0
    gaussian = make_classical("gaussian", sigma=1.0)
    out = zarr.open(str(tmp_path / "d" / "big.zarr"), mode="r")
    np.testing.assert_allclose(out[:], denoise_array(volume, gaussian, axes="ZYX"), rtol=1e-6, atol=1e-4)
    assert (tmp_path / "d" / "small.npy").exists()
    assert main(["denoise", "gaussian", str(source), "--out", str(tmp_path), "--sigma", "1"]) == 2
    assert "overwrite the input" in capsys.readouterr().err
