"""Inference engines: each one's tiled output matches fp32 PyTorch within the gate; ``auto`` measures, caches,
never picks an engine that fails the gate, and falls back to PyTorch when nothing else is installed."""

import json
import math

import numpy as np
import pytest
import torch

from pairless.cli import main
from pairless.errors import PairlessError
from pairless.inference import engines
from pairless.inference.tiling import predict_tiled
from pairless.nets.unet import UNet

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Each test gets its own engine cache and clean in-process memos."""
    monkeypatch.setenv("PAIRLESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(engines, "_RUNNERS", {})
    monkeypatch.setattr(engines, "_CHOICES", {})
    return tmp_path / "cache"


def _net(seed=0):
    torch.manual_seed(seed)
    net = UNet(depth=2, filters=8)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.fixture
def scene():
    """A smooth 'clean' image and a noisy copy (what counts is how an engine changes the net's PSNR)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:120, 0:104] / 20.0
    clean = (np.sin(yy) * np.cos(xx)).astype(np.float32)
    noisy = clean + rng.normal(0, 0.2, clean.shape).astype(np.float32)
    return torch.from_numpy(clean)[None, None], torch.from_numpy(noisy)[None, None]


def _psnr(x, clean):
    span = float(clean.max() - clean.min())
    return 10 * math.log10(span**2 / float(((x - clean) ** 2).mean()))


ENGINE_MODULES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("tta", [False, True])
def test_each_engine_matches_fp32_pytorch_within_the_gate(engine, tta, scene):
    pytest.importorskip(
        ENGINE_MODULES[engine], reason=f"the {engine} engine is an optional extra, not installed here"
    )
    clean, noisy = scene
    net = _net()
    reference = predict_tiled(net, noisy, tile=64, overlap=16, tta=tta, precision="32", engine="torch")
    out = predict_tiled(net, noisy, tile=64, overlap=16, tta=tta, engine=engine)
    assert out.shape == noisy.shape and out.dtype == torch.float32
    assert engines.gate_psnr(out, reference) >= engines.GATE_DB
    assert abs(_psnr(out, clean) - _psnr(reference, clean)) <= 0.02


def test_auto_picks_a_measured_engine_that_passes_the_gate_and_caches_it(scene, cache, monkeypatch):
    clean, noisy = scene
    net = _net()
    reference = predict_tiled(net, noisy, tile=64, overlap=16, precision="32", engine="torch")
    out = predict_tiled(net, noisy, tile=64, overlap=16, engine="auto")
    assert engines.gate_psnr(out, reference) >= engines.GATE_DB
    [(key, record)] = json.loads((cache / "engines.json").read_text()).items()
    assert engines.network_digest(net) in key and "threads" in key
    assert set(record["mp_s"]) == set(engines.candidates()) and all(v > 0 for v in record["mp_s"].values())
    assert record["psnr_db"][record["choice"]] >= engines.GATE_DB or record["choice"] == "torch-fp32"
    # a second process would read the cache instead of probing again
    monkeypatch.setattr(engines, "_CHOICES", {})

    def no_probe(*args, **kwargs):
        raise AssertionError("probed again despite the cache")

    monkeypatch.setattr(engines, "probe_engines", no_probe)
    again = predict_tiled(net, noisy, tile=64, overlap=16, engine="auto")
    assert torch.allclose(again, out, atol=1e-5)
    # another network (other weights) is another cache entry: it would be probed
    with pytest.raises(AssertionError, match="probed again"):
        predict_tiled(_net(seed=1), noisy, tile=64, overlap=16, engine="auto")


def test_auto_never_picks_a_faster_engine_that_fails_the_gate(scene, monkeypatch):
    _, noisy = scene
    net = _net()
    monkeypatch.setattr(engines, "installed", lambda name: name == "torch")  # only the PyTorch variants

    def wrong_but_fast():
        return lambda batch: batch * 0  # instant and wrong

    digest = engines.network_digest(net)
    batch = noisy[:, :, :64, :64].contiguous()
    from pairless.inference.tiling import _inference_copy, _torch_forward

    reference = lambda: _torch_forward(_inference_copy(net, torch.float32, ndim=2), torch.float32, 2)  # noqa: E731
    record = engines.probe_engines(net, digest, batch, torch_forward=wrong_but_fast, reference=reference)
    assert record["psnr_db"]["torch"] < engines.GATE_DB
    assert record["mp_s"]["torch"] > record["mp_s"]["torch-fp32"]
    assert record["choice"] == "torch-fp32"


def test_auto_falls_back_to_pytorch_when_no_other_engine_is_installed(scene, monkeypatch, cache):
    _, noisy = scene
    net = _net()
    monkeypatch.setattr(engines, "installed", lambda name: name == "torch")
    assert engines.candidates() == ["torch-fp32", "torch"]
    reference = predict_tiled(net, noisy, tile=64, overlap=16, precision="32", engine="torch")
    out = predict_tiled(net, noisy, tile=64, overlap=16, engine="auto")
    [record] = json.loads((cache / "engines.json").read_text()).values()
    assert record["choice"] in ("torch", "torch-fp32")
    assert engines.gate_psnr(out, reference) >= (engines.GATE_DB if record["choice"] == "torch-fp32" else 0)
    assert not (cache / "onnx").exists()  # nothing was exported


def test_an_engine_that_is_not_installed_or_unknown_is_one_clear_error(monkeypatch):
    with pytest.raises(
        PairlessError, match="engine 'tensorrt' is not one of auto, torch, onnxruntime, openvino"
    ):
        engines.check_engine("tensorrt")
    monkeypatch.setattr(engines, "installed", lambda name: name == "torch")
    with pytest.raises(PairlessError, match=r"engine 'openvino' is not installed .*pairless\[openvino\]"):
        predict_tiled(_net(), torch.zeros(1, 1, 32, 32), tile=32, overlap=8, engine="openvino")
    with pytest.raises(PairlessError, match="not installed"):
        with engines.use_engine("onnxruntime"):
            pass


def test_use_engine_sets_the_default_for_predict_tiled_only_inside_the_block(monkeypatch):
    seen = []
    real = engines.make_forward

    def spy(net, engine, **kwargs):
        seen.append(engine)
        return real(net, "torch", **kwargs)

    monkeypatch.setattr(engines, "make_forward", spy)
    x = torch.zeros(1, 1, 32, 32)
    with engines.use_engine("auto"):
        predict_tiled(_net(), x, tile=32, overlap=8)
    predict_tiled(_net(), x, tile=32, overlap=8)
    assert seen == ["auto", "torch"]


def test_engine_denoiser_reads_the_wrapped_denoisers_attributes():
    from pairless.methods.classical import make_classical

    inner = make_classical("gaussian", sigma=1.0)
    wrapped = engines.EngineDenoiser(inner, "auto")
    assert wrapped.spatial_ndim == inner.spatial_ndim
    y = torch.rand(1, 1, 16, 16)
    assert torch.equal(wrapped(y), inner(y))


@pytest.fixture
def model_folder(tmp_path):
    from pairless.methods import n2v
    from pairless.methods.n2v import N2VConfig
    from pairless.training.modelio import save_model_folder

    config = N2VConfig(depth=1, filters=4, precision="32-true")
    torch.manual_seed(0)
    net = n2v.N2V(config).make_net()
    folder = tmp_path / "model"
    save_model_folder(
        folder,
        config={"method": "n2v", **config.model_dump(), "normalisation": {"mean": 0.5, "std": 0.2}},
        weights=net.state_dict(),
    )
    return folder


def test_cli_engine_option_runs_the_model_and_refuses_bad_engines_with_one_line(
    tmp_path, model_folder, capsys, monkeypatch
):
    image = np.random.default_rng(0).random((48, 40)).astype(np.float32)
    np.save(tmp_path / "img.npy", image)
    outs = {}
    for engine in ["torch", "auto", *[e for e in ENGINE_MODULES if engines.installed(e)]]:
        code = main(
            [
                "denoise",
                str(model_folder),
                str(tmp_path / "img.npy"),
                "--out",
                str(tmp_path / engine),
                "--engine",
                engine,
                "--tile",
                "32",
                "--overlap",
                "8",
            ]
        )
        assert code == 0, capsys.readouterr().err
        outs[engine] = np.load(tmp_path / engine / "img.npy")
    for engine, out in outs.items():  # the torch engine runs bf16 where the CPU has it: compare loosely
        np.testing.assert_allclose(out, outs["auto"], atol=0.05 * float(np.ptp(outs["auto"])), err_msg=engine)
    capsys.readouterr()
    assert (
        main(
            [
                "denoise",
                str(model_folder),
                str(tmp_path / "img.npy"),
                "--out",
                str(tmp_path / "bad"),
                "--engine",
                "tensorrt",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tensorrt" in err
    monkeypatch.setattr(engines, "installed", lambda name: name == "torch")
    assert (
        main(
            [
                "denoise",
                str(model_folder),
                str(tmp_path / "img.npy"),
                "--out",
                str(tmp_path / "bad"),
                "--engine",
                "openvino",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not installed" in err
    assert not (tmp_path / "bad").exists()


def test_openvino_runs_bf16_only_where_it_passes_the_gate(scene, monkeypatch):
    pytest.importorskip("openvino", reason="the openvino engine is an optional extra, not installed here")
    if not engines.cpu_has_bf16():
        pytest.skip("this CPU has no native bf16: OpenVINO runs f32 only")
    _, noisy = scene
    net = _net()
    used = []
    real = engines._runner
    monkeypatch.setattr(engines, "_runner", lambda n, d, v, b: used.append(v) or real(n, d, v, b))
    monkeypatch.setattr(engines, "GATE_DB", 999.0)  # only an exact match passes: bf16 cannot
    predict_tiled(net, noisy, tile=64, overlap=16, engine="openvino")
    assert used[-1] == "openvino-f32"
    monkeypatch.setattr(engines, "GATE_DB", 0.0)  # the same measured PSNR (cached) now passes
    predict_tiled(net, noisy, tile=64, overlap=16, engine="openvino")
    assert used[-1] == "openvino-bf16"
