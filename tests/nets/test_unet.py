"""U-Net: the anchors' size, shapes for 2D/3D, N2V2 variants, channels-last."""

import pytest
import torch
import torch.nn.functional as F

from pairless.inference.tiling import predict_tiled
from pairless.nets.unet import MaxBlurPool, UNet


def test_default_matches_the_csbdeep_unet_of_the_anchors():
    assert sum(p.numel() for p in UNet().parameters()) == 333_729


@pytest.mark.parametrize(
    "kwargs", [{}, {"blur_pool": True, "skip_top": False}, {"residual": True, "depth": 3}]
)
def test_2d_shape_for_odd_sizes_after_padding(kwargs):
    net = UNet(filters=4, **kwargs).eval()
    x = torch.randn(2, 1, 37, 31)
    assert predict_tiled(net, x, tile=256, overlap=32, tta=False, multiple=net.multiple).shape == x.shape


def test_3d_shape():
    net = UNet(ndim=3, filters=4).eval()
    x = torch.randn(1, 1, 8, 12, 16)
    assert net(x).shape == x.shape
    assert predict_tiled(
        net, torch.randn(1, 1, 5, 9, 11), tile=16, overlap=4, tta=False, multiple=4
    ).shape == (1, 1, 5, 9, 11)


def test_no_top_skip_changes_the_first_decoder_width():
    with_skip = sum(p.numel() for p in UNet(filters=8).parameters())
    without = sum(p.numel() for p in UNet(filters=8, skip_top=False).parameters())
    assert with_skip - without == 9 * 8 * 8  # the 3×3 conv no longer sees the 8 skipped channels


def test_residual_adds_the_input():
    net = UNet(filters=4, residual=True).eval()
    with torch.no_grad():
        for p in net.head.parameters():
            p.zero_()
        x = torch.randn(1, 1, 16, 16)
        assert torch.equal(net(x), x)


def test_maxblurpool_halves_and_blurs():
    pool = MaxBlurPool(2, 3)
    x = torch.zeros(1, 3, 8, 8)
    x[..., 3, 3] = 1.0
    y = pool(x)
    assert y.shape == (1, 3, 4, 4)
    assert (y > 0).sum() > 1  # spread over neighbours, unlike a plain max-pool
    assert MaxBlurPool(3, 2)(torch.randn(1, 2, 4, 8, 8)).shape == (1, 2, 2, 4, 4)


def test_channels_last_gives_the_same_output():
    torch.manual_seed(0)
    net = UNet(filters=4).eval()
    x = torch.randn(2, 1, 32, 32)
    expected = net(x)
    net = net.to(memory_format=torch.channels_last)
    got = net(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(got, expected, atol=1e-5)
    assert F.mse_loss(got, expected) < 1e-10
