"""ONNX export of every trained network, checked against PyTorch in ONNX Runtime on random inputs."""

import pytest
import torch

from pairless.errors import PairlessError
from pairless.nets.blindspot import BlindSpotNet
from pairless.nets.dncnn import DnCNN
from pairless.nets.iscl import Extractor, Generator, init_weights_
from pairless.nets.redcnn import REDCNN
from pairless.nets.unet import UNet
from pairless.nets.zsn2n import ZSN2NNet

pytest.importorskip("onnx", reason="ONNX export needs the 'onnx' extra")
pytest.importorskip("onnxruntime", reason="checking the export needs the 'onnx' extra (onnxruntime)")
from pairless.inference.onnx_export import check_onnx, export_onnx  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _with_statistics(net):
    """Non-trivial batch-norm statistics and ISCL's initialiser, so every layer shapes the output."""
    generator = torch.Generator().manual_seed(0)
    if isinstance(net, (Generator, Extractor)):
        init_weights_(net, generator, std=0.2)
    for module in net.modules():
        if hasattr(module, "running_mean") and isinstance(module.running_mean, torch.Tensor):
            module.running_mean.uniform_(-0.5, 0.5, generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
    return net.eval()


# name: (network, example shape, shapes to check: other batch sizes and tile sizes)
NETWORKS = {
    "unet-2d": (lambda: UNet(depth=2, filters=8), (1, 1, 32, 32), [(1, 1, 64, 64), (3, 1, 48, 80)]),
    "unet-3d": (lambda: UNet(ndim=3, depth=1, filters=4), (1, 1, 8, 16, 16), [(2, 1, 12, 20, 24)]),
    "n2v2": (
        lambda: UNet(depth=2, filters=8, blur_pool=True, skip_top=False),
        (1, 1, 32, 32),
        [(2, 1, 40, 48)],
    ),
    "unet-residual-no-bn": (
        lambda: UNet(depth=1, filters=4, batch_norm=False, residual=True),
        (1, 1, 16, 16),
        [(1, 1, 30, 18)],
    ),
    "dncnn": (lambda: DnCNN(depth=4, channels=8), (1, 1, 16, 16), [(2, 1, 33, 17)]),
    "redcnn": (lambda: REDCNN(channels=8), (1, 1, 32, 32), [(1, 1, 40, 37)]),
    "iscl-F-instance": (lambda: Generator("instance", 8, 1), (1, 1, 32, 32), [(2, 1, 64, 48)]),
    "iscl-F-batch-instance": (lambda: Generator("batch_instance", 8, 1), (1, 1, 32, 32), [(1, 1, 64, 64)]),
    "iscl-H-switchable": (lambda: Extractor("switchable", 8, 4), (1, 1, 32, 32), [(2, 1, 31, 17)]),
    "blind-spot": (lambda: BlindSpotNet(depth=1, filters=4), (1, 1, 16, 16), [(2, 1, 32, 32)]),
    "zsn2n": (lambda: ZSN2NNet(filters=8), (1, 1, 16, 16), [(2, 1, 21, 35)]),
}


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_every_network_exports_and_matches_pytorch_on_random_inputs(tmp_path, name):
    make, example, shapes = NETWORKS[name]
    torch.manual_seed(0)
    net = _with_statistics(make())
    before = {k: v.clone() for k, v in net.state_dict().items()}
    path = export_onnx(net, tmp_path / f"{name}.onnx", example=torch.randn(example))
    assert path == tmp_path / f"{name}.onnx" and sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    worst = check_onnx(net, path, [example, *shapes])
    with torch.no_grad():
        scale = float(net(torch.randn(example)).abs().max())
    assert worst <= 1e-4 * max(scale, 1.0), f"{name}: ONNX differs from PyTorch by {worst}"
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the network is untouched
    assert not net.training


def test_fixed_spatial_sizes_reject_other_sizes(tmp_path):
    import onnxruntime as ort

    net = _with_statistics(DnCNN(depth=3, channels=4))
    path = export_onnx(net, tmp_path / "fixed.onnx", example=torch.randn(1, 1, 16, 16), dynamic_spatial=False)
    assert check_onnx(net, path, [(3, 1, 16, 16)]) < 1e-5  # the batch stays dynamic
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument):
        check_onnx(net, path, [(1, 1, 20, 16)])


def test_the_torch_export_path_also_works(tmp_path):
    pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript")
    net = _with_statistics(ZSN2NNet(filters=4))
    path = export_onnx(net, tmp_path / "z.onnx", example=torch.randn(1, 1, 16, 16), dynamo=True)
    assert check_onnx(net, path, [(2, 1, 24, 20)]) < 1e-5


class _Broken(torch.nn.Module):
    def forward(self, x):
        raise RuntimeError("boom")


def test_a_failed_export_names_the_network_and_leaves_no_file(tmp_path):
    with pytest.raises(PairlessError, match=r"could not export _Broken to ONNX \(RuntimeError: boom\)"):
        export_onnx(_Broken(), tmp_path / "b.onnx", example=torch.randn(1, 1, 8, 8))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(PairlessError, match="must end in .onnx"):
        export_onnx(ZSN2NNet(), tmp_path / "b.pt", example=torch.randn(1, 1, 8, 8))
    with pytest.raises(PairlessError, match=r"\(N, C, \*spatial\)"):
        export_onnx(ZSN2NNet(), tmp_path / "b.onnx", example=torch.randn(8, 8))
    assert list(tmp_path.iterdir()) == []
