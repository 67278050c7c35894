"""Tiled prediction: same result as one big forward pass, no seams, exact weights, correct TTA."""

import pytest
import torch
from torch import nn

from pairless.errors import PairlessError
from pairless.inference.tiling import _balanced_edge, _starts, predict_tiled


class PoolNet(nn.Module):
    """Tiny random net with a pooling level (needs sizes divisible by 2), receptive radius ≤ 4."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.a, self.b = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 1)
        self.c = nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, x):
        h = torch.relu(self.a(x))
        low = nn.functional.interpolate(self.b(nn.functional.avg_pool2d(h, 2)), scale_factor=2)
        return self.c(torch.cat([h, low], 1))


def deep_net(ndim: int, layers: int, seed: int = 0) -> nn.Module:
    """Stack of random 3x3(x3) convs with zero padding: receptive radius = ``layers``."""
    torch.manual_seed(seed)
    conv = nn.Conv2d if ndim == 2 else nn.Conv3d
    mods = []
    for i in range(layers):
        mods += [conv(1 if i == 0 else 4, 4 if i < layers - 1 else 1, 3, padding=1)]
        if i < layers - 1:
            mods.append(nn.Tanh())
    return nn.Sequential(*mods)


def identity_net(ndim: int = 2) -> nn.Module:
    conv = (nn.Conv2d if ndim == 2 else nn.Conv3d)(1, 1, 1, bias=False)
    nn.init.ones_(conv.weight)
    return conv


def smooth_image(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 1, *shape, generator=g)
    pool = nn.functional.avg_pool2d if len(shape) == 2 else nn.functional.avg_pool3d
    return pool(x, 3, stride=1, padding=1) + 0.1 * torch.randn(1, 1, *shape, generator=g)


@pytest.mark.parametrize("shape", [(37, 51), (64, 80), (5, 3)])
def test_tiled_equals_one_forward_2d(shape):
    net = PoolNet()
    x = torch.cat([smooth_image(*shape, seed=s) for s in range(3)])  # tiles of 3 images share forwards
    whole = predict_tiled(net, x, tile=512, overlap=0, multiple=2, precision="32")
    tiled = predict_tiled(net, x, tile=16, overlap=12, multiple=2, precision="32")
    assert tiled.shape == x.shape
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=1e-5)
    if shape == (64, 80):  # no padding needed: the single tile is exactly the plain forward pass
        with torch.no_grad():
            torch.testing.assert_close(whole, net(x), atol=1e-5, rtol=1e-5)


def test_tiled_equals_one_forward_3d():
    net, x = deep_net(3, 1), smooth_image(9, 37, 29)
    with torch.no_grad():
        whole = net(x)
    tiled = predict_tiled(net, x, tile=8, overlap=6, multiple=1, precision="32")  # tiles along Z too
    assert tiled.shape == x.shape
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", range(24, 400, 7))
@pytest.mark.parametrize(
    ("tile", "overlap", "multiple"), [(64, 8, 4), (512, 32, 16), (48, 30, 2), (100, 0, 1)]
)
def test_balanced_tiles_are_as_few_and_no_larger_and_still_cover_with_the_overlap(
    size, tile, overlap, multiple
):
    size = -(-size // multiple) * multiple  # predict_tiled pads to the multiple first
    tile = min(tile // multiple * multiple, size)
    edge = _balanced_edge(size, tile, overlap, multiple)
    starts = _starts(size, edge, overlap, multiple)
    assert edge <= tile and edge % multiple == 0
    assert len(starts) == len(_starts(size, tile, overlap, multiple))
    assert starts[0] == 0 and starts[-1] + edge == size
    assert all(a + edge - b >= overlap for a, b in zip(starts, starts[1:]))
    if edge - multiple > overlap:  # a smaller edge would need more tiles
        assert len(_starts(size, edge - multiple, overlap, multiple)) > len(starts)


def test_the_network_sees_the_balanced_tile_not_the_largest():
    seen = []

    class Recorder(nn.Module):
        def forward(self, x):
            seen.append(tuple(x.shape[2:]))
            return x

    predict_tiled(Recorder(), torch.zeros(1, 1, 100, 100), tile=64, overlap=8, multiple=4, precision="32")
    assert set(seen) == {(56, 56)}  # 2 tiles of 56 cover 100 px with ≥ 8 px overlap; 64 would waste 28


@pytest.mark.parametrize("shape", [(37, 51), (9, 37, 29)])
def test_weights_are_a_partition_of_unity(shape):
    # identity net: output must equal input exactly, so the blend neither shifts the mean nor leaves seams
    x = smooth_image(*shape) + 3.0
    out = predict_tiled(identity_net(len(shape)), x, tile=12, overlap=8, multiple=4, precision="32")
    torch.testing.assert_close(out, x, atol=1e-5, rtol=1e-6)
    assert abs(out.mean().item() - x.mean().item()) < 1e-5


def test_constant_net_output_is_constant_everywhere():
    class Constant(nn.Module):
        def forward(self, x):
            return torch.full_like(x, 0.7)

    out = predict_tiled(Constant(), torch.randn(2, 1, 45, 70), tile=16, overlap=8, precision="32")
    torch.testing.assert_close(out, torch.full_like(out, 0.7), atol=1e-6, rtol=0)


def test_blending_removes_seams_of_a_net_larger_than_the_overlap():
    # receptive radius 6 > overlap/4 = 2: tiles are individually wrong near their edges; blending must
    # spread that error smoothly instead of leaving a jump at every tile boundary (hard crop-and-paste)
    net, x = deep_net(2, 6), smooth_image(96, 96)
    with torch.no_grad():
        whole = net(x)

    def largest_jump(out):
        err = out - whole
        return max(err.diff(dim=-1).abs().max().item(), err.diff(dim=-2).abs().max().item())

    hard = predict_tiled(net, x, tile=32, overlap=0, multiple=1, precision="32")
    blended = predict_tiled(net, x, tile=32, overlap=8, multiple=1, precision="32")
    assert largest_jump(hard) > 1e-3  # the test is meaningful: pasted tiles do have seams
    assert largest_jump(blended) < 0.2 * largest_jump(hard)
    assert (blended - whole).abs().max() < (hard - whole).abs().max()


def test_tta_of_an_equivariant_net_equals_plain_prediction():
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():  # kernel symmetric under all 8 rotations/flips
        conv.weight.copy_(torch.tensor([[0.05, 0.1, 0.05], [0.1, 0.4, 0.1], [0.05, 0.1, 0.05]]))
    x = smooth_image(37, 51)
    plain = predict_tiled(conv, x, tile=16, overlap=8, precision="32")
    tta = predict_tiled(conv, x, tile=16, overlap=8, tta=True, precision="32")
    torch.testing.assert_close(tta, plain, atol=1e-5, rtol=1e-5)


def test_tta_averages_the_inverse_transformed_predictions():
    net, x = deep_net(2, 1, seed=3), smooth_image(32, 32)  # not equivariant
    expected = torch.zeros_like(x)
    with torch.no_grad():
        for flip in (False, True):
            for k in range(4):
                t = torch.rot90(x.flip(-1) if flip else x, k, dims=(-2, -1))
                y = torch.rot90(net(t), -k, dims=(-2, -1))
                expected += (y.flip(-1) if flip else y) / 8
    out = predict_tiled(net, x, tile=64, overlap=0, tta=True, precision="32")
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out, predict_tiled(net, x, tile=64, overlap=0, precision="32"), atol=1e-3)


def test_bf16_is_close_to_fp32_and_restores_training_mode():
    net, x = PoolNet(), smooth_image(40, 40)
    net.train()
    fp32 = predict_tiled(net, x, tile=16, overlap=8, multiple=2, precision="32")
    bf16 = predict_tiled(net, x, tile=16, overlap=8, multiple=2, precision="bf16")
    assert net.training
    assert bf16.dtype == torch.float32
    assert (bf16 - fp32).abs().max() < 0.05 * fp32.abs().max()


@pytest.mark.parametrize(
    "shape, options",
    [
        ((1, 2, 8, 8), {}),
        ((1, 1, 8, 8), {"overlap": 600}),  # not below the default tile (512)
        ((1, 1, 8, 8), {"precision": "64"}),
        ((1, 1, 0, 8), {}),
    ],
)
def test_bad_arguments_raise_one_line_errors(shape, options):
    with pytest.raises(PairlessError):
        predict_tiled(identity_net(), torch.zeros(shape), **options)


def test_unet_batch_norm_folding_keeps_the_eval_output():
    from pairless.nets.unet import UNet

    torch.manual_seed(0)
    net = UNet(depth=1, filters=4)
    for module in net.modules():  # non-trivial running statistics, as after training
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
            module.bias.data.normal_()
    x = smooth_image(24, 40)
    net.train()
    out = predict_tiled(net, x, tile=64, overlap=0, multiple=net.multiple, precision="32")
    assert net.training  # the caller's network is not switched to eval mode
    with torch.no_grad():
        torch.testing.assert_close(out, net.eval()(x), atol=1e-5, rtol=1e-5)
