"""BioImage Model Zoo packages: a pairless N2V model exported passes bioimageio.core's test, comes back
denoising identically, and every bad package is refused in one line with nothing written or run."""

import io
import os
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml

from pairless import api
from pairless.bmz import export_bmz, load_bmz
from pairless.cli import main
from pairless.errors import PairlessError
from pairless.methods import registry
from pairless.methods.n2v import N2VConfig
from pairless.methods.registry import load_model

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = N2VConfig(
    patch_size=32, batch_size=4, filters=8, precision="32-true", mask_fraction=0.01, steps=6, val_every=3
)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny N2V model folder (a few steps: the test is about packaging, not denoising quality)."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("n2v") / "model"
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:96, :96] / 96
    image = (100 + 20 * np.sin(6 * x) * np.cos(4 * y) + rng.normal(0, 5, (96, 96))).astype(np.float32)
    api.fit("n2v", [image], axes="YX", out=folder, config=TINY, progress=False)
    return folder


@pytest.fixture(scope="module")
def package(model):
    return export_bmz(model, model.parent / "n2v.zip", name="tiny n2v", authors=["Test Author"])


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted during a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _rewrite(package: Path, target: Path, *, rdf=None, drop=(), replace=None) -> Path:
    """A copy of ``package`` with its rdf.yaml changed by ``rdf(dict)``, entries dropped or replaced."""
    replace = replace or {}
    with zipfile.ZipFile(package) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            if info.filename in drop:
                continue
            data = replace.get(info.filename, src.read(info))
            if info.filename == "rdf.yaml" and rdf is not None:
                content = yaml.safe_load(data)
                rdf(content)
                data = yaml.safe_dump(content).encode()
            dst.writestr(info.filename, data)
    return target


def _image(shape=(70, 90), seed=1):
    rng = np.random.default_rng(seed)
    return (100 + rng.normal(0, 5, shape)).astype(np.float32)


def test_package_has_the_spec_0_5_layout(package):
    with zipfile.ZipFile(package) as archive:
        names = set(archive.namelist())
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
    assert {
        "rdf.yaml",
        "weights.pt",
        "unet.py",
        "weights_torchscript.pt",
        "weights.onnx",
        "test_input.npy",
        "test_output.npy",
        "cover.png",
        "README.md",
    } <= names
    assert rdf["format_version"].startswith("0.5") and rdf["type"] == "model"
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript", "onnx"}
    arch = rdf["weights"]["pytorch_state_dict"]["architecture"]
    assert arch["callable"] == "UNet" and arch["kwargs"]["filters"] == 8 and arch["kwargs"]["ndim"] == 2
    assert any("Noise2Void" in c["text"] for c in rdf["cite"]) and rdf["license"] == "BSD-3-Clause"
    halo = rdf["outputs"][0]["axes"][-1]["halo"]
    assert 10 <= halo <= 64  # the measured reach of a depth-2 U-Net (25 px)
    assert rdf["inputs"][0]["axes"][-1]["size"]["min"] > 2 * halo


@pytest.mark.parametrize("weight_format", ["pytorch_state_dict", "torchscript", "onnx"])
def test_bioimageio_core_passes_the_package(package, weight_format, no_network, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime") if weight_format == "onnx" else None
    from bioimageio.core import test_model
    from bioimageio.spec import settings

    monkeypatch.setattr(settings, "cache_path", tmp_path / "cache")
    summary = test_model(package, weight_format=weight_format)
    failed = [d.name for d in summary.details if d.status == "failed"]
    assert summary.status == "passed", failed


def test_reimported_package_denoises_identically(model, package):
    image = _image()[None, None]
    folder = load_model(model, tile=32, overlap=8)(torch.from_numpy(image))
    zipped = load_bmz(package, tile=32, overlap=8)(torch.from_numpy(image))
    assert zipped.shape == folder.shape
    assert float((zipped - folder).abs().max()) <= 1e-5


def test_cli_exports_and_denoises_from_the_package(model, tmp_path, capsys):
    tifffile.imwrite(tmp_path / "img.tif", _image())
    zipped = tmp_path / "cli.zip"
    assert (
        main(["export", str(model), "--bmz", str(zipped), "--no-onnx", "--sample", str(tmp_path / "img.tif")])
        == 0
    )
    with zipfile.ZipFile(zipped) as archive:
        assert "weights.onnx" not in archive.namelist()
        assert np.load(io.BytesIO(archive.read("test_input.npy"))).shape == (
            1,
            1,
            68,
            88,
        )  # cropped to multiples of 4
    assert main(["denoise", str(zipped), str(tmp_path / "img.tif"), "--out", str(tmp_path / "a")]) == 0
    assert main(["denoise", str(model), str(tmp_path / "img.tif"), "--out", str(tmp_path / "b")]) == 0
    a, b = tifffile.imread(tmp_path / "a" / "img.tif"), tifffile.imread(tmp_path / "b" / "img.tif")
    assert np.abs(a - b).max() <= 1e-5


def test_an_onnx_only_package_runs_in_onnx_runtime(package, model, tmp_path):
    pytest.importorskip("onnxruntime")

    def onnx_only(rdf):
        rdf["weights"] = {"onnx": {**rdf["weights"]["onnx"], "parent": None}}

    zipped = _rewrite(package, tmp_path / "onnx.zip", rdf=onnx_only, drop=("weights.pt", "unet.py"))
    denoiser = load_bmz(zipped, tile=64, overlap=16)
    assert type(denoiser.net).__name__ == "OnnxNet"
    image = torch.from_numpy(_image((64, 64))[None, None])
    with torch.no_grad():
        reference = load_model(model, tile=64, overlap=16)
        reference.net.float()
        expected = reference.net((image - reference.mean) / reference.std) * reference.std + reference.mean
    assert float((denoiser(image) - expected).abs().max()) < 1e-3 * float(expected.abs().max())


def _error_line(call) -> str:
    with pytest.raises(PairlessError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message
    return message


def test_torchscript_only_is_refused_and_never_run(package, tmp_path, monkeypatch):
    def torchscript_only(rdf):
        rdf["weights"] = {"torchscript": {**rdf["weights"]["torchscript"], "parent": None}}

    zipped = _rewrite(package, tmp_path / "ts.zip", rdf=torchscript_only, drop=("weights.pt", "weights.onnx"))
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("TorchScript was loaded"))
    assert "only TorchScript" in _error_line(lambda: load_bmz(zipped))


def test_a_foreign_architecture_is_never_imported(package, tmp_path):
    marker = tmp_path / "ran"
    evil = f"open({str(marker)!r}, 'w').write('x')\nclass Net: pass\n".encode()

    def foreign(rdf):
        rdf["weights"] = {"pytorch_state_dict": {**rdf["weights"]["pytorch_state_dict"]}}
        rdf["weights"]["pytorch_state_dict"]["architecture"] = {
            "source": "evil.py",
            "callable": "Net",
            "kwargs": {},
        }

    zipped = _rewrite(
        package,
        tmp_path / "foreign.zip",
        rdf=foreign,
        drop=("weights.onnx", "weights_torchscript.pt"),
        replace={"unet.py": evil},
    )
    with zipfile.ZipFile(zipped, "a") as archive:
        archive.writestr("evil.py", evil)
    message = _error_line(lambda: load_bmz(zipped))
    assert "not one of pairless's networks" in message and "never imports" in message
    assert not marker.exists()


def test_pickled_code_posing_as_weights_is_refused(package, tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    buffer = io.BytesIO()
    torch.save({"w": Payload()}, buffer)
    data = buffer.getvalue()

    def new_hash(rdf):
        import hashlib

        rdf["weights"]["pytorch_state_dict"]["sha256"] = hashlib.sha256(data).hexdigest()

    zipped = _rewrite(package, tmp_path / "pickle.zip", rdf=new_hash, replace={"weights.pt": data})
    assert "not a plain state dict" in _error_line(lambda: load_bmz(zipped))
    assert not marker.exists()


@pytest.mark.parametrize("entry", ["../outside.txt", "/etc/evil", "a/../../b", "C:/evil"])
def test_zip_entries_with_absolute_or_dotdot_paths_are_refused(package, tmp_path, entry):
    zipped = _rewrite(package, tmp_path / "traversal.zip")
    with zipfile.ZipFile(zipped, "a") as archive:
        archive.writestr(zipfile.ZipInfo(entry), b"x")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert "absolute or '..' path" in _error_line(lambda: load_bmz(zipped))
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not (tmp_path.parent / "outside.txt").exists()


def test_corrupt_zips_are_refused_in_one_line(package, tmp_path):
    data = package.read_bytes()
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(data[: len(data) // 2])
    assert "zip" in _error_line(lambda: load_bmz(truncated))
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"not a zip at all" * 100)
    assert "not a readable zip" in _error_line(lambda: load_bmz(garbage))
    # a damaged member (flipped bytes inside the stored weights): caught by the CRC or the sha256
    stored = tmp_path / "stored.zip"
    with zipfile.ZipFile(package) as src, zipfile.ZipFile(stored, "w", compression=zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    raw = bytearray(stored.read_bytes())
    at = raw.index(b"PK\x03\x04", raw.index(b"weights.pt")) - 200
    raw[at : at + 8] = b"\xff" * 8
    stored.write_bytes(bytes(raw))
    assert "corrupt zip" in _error_line(lambda: load_bmz(stored)) or "sha256" in _error_line(
        lambda: load_bmz(stored)
    )


def test_packages_of_other_kinds_are_refused(package, tmp_path):
    def segmentation(rdf):
        rdf["outputs"][0]["axes"][1]["channel_names"] = ["background", "foreground"]

    def dataset(rdf):
        rdf["type"] = "dataset"

    def keras(rdf):
        rdf["weights"] = {"keras_hdf5": {"source": "weights.h5", "tensorflow_version": "2.15"}}

    cases = {
        "segmentation": (segmentation, "2 channels"),
        "dataset": (dataset, "not a model"),
        "keras": (keras, "keras_hdf5"),
    }
    for label, (change, expected) in cases.items():
        zipped = _rewrite(package, tmp_path / f"{label}.zip", rdf=change)
        message = _error_line(lambda zipped=zipped: load_bmz(zipped))
        assert expected in message, message


def test_cli_refuses_a_bad_package_in_one_line_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 truncated")
    tifffile.imwrite(tmp_path / "img.tif", _image())
    assert main(["denoise", str(bad), str(tmp_path / "img.tif"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_export_refuses_bad_targets_and_writes_nothing(model, tmp_path):
    assert "must end in .zip" in _error_line(lambda: export_bmz(model, tmp_path / "model.tar"))
    assert "not a pairless model folder" in _error_line(lambda: export_bmz(tmp_path, tmp_path / "x.zip"))
    assert "dimensions" in _error_line(lambda: export_bmz(model, tmp_path / "y.zip", sample=np.zeros(64)))
    assert not list(tmp_path.glob("*.zip")) and not list(tmp_path.glob(".*part*"))


@pytest.mark.slow
def test_a_3d_model_round_trips(tmp_path):
    rng = np.random.default_rng(3)
    volume = (10 + rng.normal(0, 2, (24, 48, 48))).astype(np.float32)
    config = N2VConfig(
        ndim=3,
        patch_size=16,
        patch_depth=16,
        batch_size=2,
        filters=4,
        precision="32-true",
        mask_fraction=0.01,
        steps=2,
        val_every=1,
    )
    api.fit("n2v", [volume], axes="ZYX", out=tmp_path / "m3", config=config, progress=False)
    zipped = export_bmz(tmp_path / "m3", tmp_path / "m3.zip", formats=("pytorch_state_dict",))
    with zipfile.ZipFile(zipped) as archive:
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
    assert [a.get("id") for a in rdf["inputs"][0]["axes"][2:]] == ["z", "y", "x"]
    x = torch.from_numpy(volume[None, None])
    folder = load_model(tmp_path / "m3", tile=32, overlap=8)(x)
    assert float((load_bmz(zipped, tile=32, overlap=8)(x) - folder).abs().max()) <= 1e-5


def test_a_method_that_is_more_than_one_network_is_not_exported(tmp_path):
    spec = registry.get("bsn")  # its denoiser is a posterior mean over the network's two outputs
    config = spec.config_class.for_profile(
        "quick", patch_size=32, batch_size=2, filters=4, steps=2, val_every=1, precision="32-true"
    )
    api.fit("bsn", [_image((64, 64))], axes="YX", out=tmp_path / "bsn", config=config, progress=False)
    assert "cannot be exported" in _error_line(lambda: export_bmz(tmp_path / "bsn", tmp_path / "bsn.zip"))
    assert not (tmp_path / "bsn.zip").exists()


def test_a_foreign_network_of_the_same_name_uses_onnx_or_is_refused(package, tmp_path):
    pytest.importorskip("onnxruntime")

    def careamics_like(rdf):
        rdf["weights"]["pytorch_state_dict"]["architecture"]["kwargs"] = {"conv_dims": 2, "num_classes": 1}

    with_onnx = _rewrite(package, tmp_path / "foreign-onnx.zip", rdf=careamics_like)
    assert type(load_bmz(with_onnx).net).__name__ == "OnnxNet"

    def without_onnx(rdf):
        careamics_like(rdf)
        del rdf["weights"]["onnx"], rdf["weights"]["torchscript"]

    zipped = _rewrite(package, tmp_path / "foreign.zip", rdf=without_onnx)
    assert "so it is another network" in _error_line(lambda: load_bmz(zipped))
