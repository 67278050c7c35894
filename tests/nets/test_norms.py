"""Each normalization layer against its formula, computed by hand with plain torch ops."""

import pytest
import torch
from torch import nn

from pairless.nets.norms import (
    EPS,
    NORMS,
    BatchInstanceNorm2d,
    SwitchNorm2d,
    make_norm,
    project_gates_,
    wrap_conv,
)


def _x(n=3, c=64, h=5, w=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, h, w, generator=g) * 3 + 1.5


def _normalize(x, dims):
    mean = x.mean(dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dims, keepdim=True)
    return (x - mean) / torch.sqrt(var + EPS)


def _randomize_affine(layer, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.weight.copy_(torch.rand(layer.weight.shape, generator=g) + 0.5)
        layer.bias.copy_(torch.randn(layer.bias.shape, generator=g))
    return layer.weight.reshape(1, -1, 1, 1), layer.bias.reshape(1, -1, 1, 1)


def test_every_name_builds_and_keeps_shape():
    x = _x()
    for name in NORMS:
        assert make_norm(name, 64)(x).shape == x.shape
    with pytest.raises(ValueError, match="unknown normalization"):
        make_norm("batchnorm", 64)


def test_batch_norm_train_and_eval_use_batch_then_running_stats():
    layer = make_norm("batch", 64)
    gamma, beta = _randomize_affine(layer)
    x = _x()
    assert torch.allclose(layer(x), _normalize(x, (0, 2, 3)) * gamma + beta, atol=1e-5)
    layer.eval()
    mean = 0.1 * x.mean((0, 2, 3))  # one update from 0 with momentum 0.1
    var = 0.9 + 0.1 * x.var((0, 2, 3), unbiased=True)
    expected = (x - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + EPS) * gamma + beta
    assert torch.allclose(layer(x[:1]), expected[:1], atol=1e-5)


@pytest.mark.parametrize(
    ("name", "dims"),
    [("layer", (1, 2, 3)), ("instance", (2, 3))],
)
def test_layer_and_instance_norm(name, dims):
    layer = make_norm(name, 64)
    gamma, beta = _randomize_affine(layer)
    x = _x()
    expected = _normalize(x, dims) * gamma + beta
    assert torch.allclose(layer(x), expected, atol=1e-5)
    layer.eval()  # batch-independent: the same in eval mode and for one sample
    assert torch.allclose(layer(x[1:2]), expected[1:2], atol=1e-5)


def test_group_norm_uses_32_channels_per_group():
    layer = make_norm("group", 96)
    gamma, beta = _randomize_affine(layer)
    x = _x(c=96)
    groups = x.reshape(3, 3, 32, 5, 7)  # 96 channels = 3 groups of 32
    expected = _normalize(groups, (2, 3, 4)).reshape(x.shape) * gamma + beta
    assert torch.allclose(layer(x), expected, atol=1e-5)
    # 32 channels make one group: GroupNorm is then LayerNorm, as seed 002 notes
    x32 = _x(c=32)
    assert torch.allclose(make_norm("group", 32)(x32), make_norm("layer", 32)(x32), atol=1e-6)


@pytest.mark.parametrize("running_stats", [True, False])
def test_batch_instance_norm_mixes_bn_and_in_with_clipped_gate(running_stats):
    layer = BatchInstanceNorm2d(64, running_stats=running_stats)
    gamma, beta = _randomize_affine(layer)
    with torch.no_grad():  # gates outside [0, 1] must act as their clipped values
        layer.rho.copy_(torch.linspace(-0.5, 1.5, 64).view(1, -1, 1, 1))
    rho = layer.rho.clamp(0, 1)
    x = _x()
    x_bn, x_in = _normalize(x, (0, 2, 3)), _normalize(x, (2, 3))
    assert torch.allclose(layer(x), (rho * x_bn + (1 - rho) * x_in) * gamma + beta, atol=1e-5)
    layer.eval()
    out = layer(x[:1])
    if running_stats:
        mean = (0.1 * x.mean((0, 2, 3))).view(1, -1, 1, 1)
        var = (0.9 + 0.1 * x.var((0, 2, 3), unbiased=True)).view(1, -1, 1, 1)
        x_bn1 = (x[:1] - mean) / torch.sqrt(var + EPS)
    else:  # official ISCL: batch moments even at inference, so batch size 1 turns BN into IN
        x_bn1 = _normalize(x[:1], (2, 3))
    expected = (rho * x_bn1 + (1 - rho) * _normalize(x[:1], (2, 3))) * gamma + beta
    assert torch.allclose(out, expected, atol=1e-5)
    project_gates_(layer)
    assert layer.rho.min() == 0 and layer.rho.max() == 1


def _switch_expected(x, layer, mean_bn, var_bn):
    gamma, beta = layer.weight, layer.bias
    wm, wv = torch.softmax(layer.mean_weight, 0), torch.softmax(layer.var_weight, 0)
    mean_in = x.mean((2, 3), keepdim=True)
    var_in = ((x - mean_in) ** 2).mean((2, 3), keepdim=True)
    mean_ln = x.mean((1, 2, 3), keepdim=True)
    var_ln = ((x - mean_ln) ** 2).mean((1, 2, 3), keepdim=True)
    mean = wm[0] * mean_in + wm[1] * mean_ln + wm[2] * mean_bn
    var = wv[0] * var_in + wv[1] * var_ln + wv[2] * var_bn
    return (x - mean) / torch.sqrt(var + EPS) * gamma + beta


def test_switchable_norm_train_matches_eq_13():
    layer = SwitchNorm2d(64)
    _randomize_affine(layer)
    with torch.no_grad():
        layer.mean_weight.copy_(torch.tensor([0.3, -1.0, 2.0]))
        layer.var_weight.copy_(torch.tensor([1.5, 0.2, -0.7]))
    x = _x()
    mean_bn = x.mean((0, 2, 3), keepdim=True)
    var_bn = ((x - mean_bn) ** 2).mean((0, 2, 3), keepdim=True)
    assert torch.allclose(layer(x), _switch_expected(x, layer, mean_bn, var_bn), atol=1e-4)


def test_switchable_norm_eval_at_batch_size_1_uses_running_stats():
    layer = SwitchNorm2d(64)
    _randomize_affine(layer)
    with torch.no_grad():
        layer.mean_weight.copy_(torch.tensor([0.0, 0.0, 3.0]))  # mostly BN, so the BN part matters
        layer.var_weight.copy_(torch.tensor([0.0, 0.0, 3.0]))
    batches = [_x(seed=s) for s in range(3)]
    running_mean, running_var = torch.zeros(64), torch.ones(64)
    for b in batches:
        layer(b)
        running_mean = 0.9 * running_mean + 0.1 * b.mean((0, 2, 3))
        running_var = 0.9 * running_var + 0.1 * b.var((0, 2, 3), unbiased=True)
    assert torch.allclose(layer.running_mean, running_mean, atol=1e-5)
    assert torch.allclose(layer.running_var, running_var, atol=1e-4)
    layer.eval()
    one = _x(n=1, seed=7)
    expected = _switch_expected(one, layer, running_mean.view(1, -1, 1, 1), running_var.view(1, -1, 1, 1))
    assert torch.allclose(layer(one), expected, atol=1e-4)
    # at inference an image's output does not depend on what else is in its batch
    pair = torch.cat([one, _x(n=1, seed=8) * 10])
    assert torch.allclose(layer(pair)[:1], layer(one), atol=1e-5)


def test_spectral_norm_makes_largest_singular_value_one():
    torch.manual_seed(0)
    conv = wrap_conv("spectral", nn.Conv2d(32, 64, 4))
    assert isinstance(make_norm("spectral", 64), nn.Identity)
    with torch.no_grad():
        conv.parametrizations.weight.original.mul_(7.0)
    conv.train()
    x = torch.zeros(1, 32, 8, 8)
    for _ in range(20):  # one power iteration per training forward
        conv(x)
    weight = conv.weight.reshape(64, -1)
    assert torch.linalg.matrix_norm(weight, ord=2).item() == pytest.approx(1.0, abs=1e-3)
    raw = conv.parametrizations.weight.original.reshape(64, -1)
    assert torch.linalg.matrix_norm(raw, ord=2).item() > 2  # it really rescaled something
    plain = nn.Conv2d(1, 1, 3)
    assert wrap_conv("instance", plain) is plain


@pytest.mark.parametrize("name", ["switchable", "batch_instance"])
def test_bf16_features_are_normalized_with_float32_statistics(name):
    # E[x²] - E[x]² cancels badly for a large mean: in bf16 the variance came out 0 or negative
    layer = make_norm(name, 32)
    x = (_x(c=32) + 100.0).to(torch.bfloat16)
    out = layer(x)
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), layer(x.float()), atol=0.05, rtol=0.02)


@pytest.mark.parametrize("train", [True, False])
def test_official_batch_instance_norm_at_batch_1_is_instance_norm(train):
    # the official BIN takes batch moments also at test time, where ISCL runs one whole image: the BN
    # part then has the IN part's statistics, so the output is InstanceNorm whatever the gates are
    bin_layer = make_norm("batch_instance_iscl", 64).train(train)
    in_layer = make_norm("instance", 64).train(train)
    gamma, beta = _randomize_affine(bin_layer)
    with torch.no_grad():
        in_layer.weight.copy_(gamma.flatten())
        in_layer.bias.copy_(beta.flatten())
        bin_layer.rho.copy_(torch.linspace(0, 1, 64).view(1, -1, 1, 1))
    one = _x(n=1, seed=4)
    assert torch.allclose(bin_layer(one), in_layer(one), atol=1e-4)
    # and it never reads or writes running statistics, so an eval pass equals a training pass
    before = bin_layer.running_mean.clone()
    batch = _x(seed=5)
    assert torch.allclose(bin_layer.train()(batch), bin_layer.eval()(batch))
    assert torch.equal(bin_layer.running_mean, before)
    assert bin_layer.eps == 1e-7  # the official epsilon
