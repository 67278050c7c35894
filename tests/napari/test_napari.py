"""The napari plugin on an offscreen Qt platform: the manifest, the widgets, a tiny training run started and
stopped (leaving a usable model), denoising and evaluation adding a layer and a table, the sample data."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pytest

# napari's own package, not this folder: tests/ is on sys.path, so without napari installed a bare
# `import napari` would find tests/napari as a namespace package
pytest.importorskip("napari.components")
pytest.importorskip("pytestqt")

from pairless import api
from pairless.config import read_yaml
from pairless.denoiser import denoise_array

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"patch_size": 32, "batch_size": 4, "filters": 8, "precision": "32-true", "val_every": 3}


@pytest.fixture
def viewer():
    """A napari viewer model: the layer list the widgets work with, without an OpenGL canvas."""
    from napari.components import ViewerModel

    return ViewerModel()


def _noisy(shape=(64, 64), seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: shape[0], : shape[1]] / shape[0]
    clean = (np.sin(6 * x) * np.cos(4 * y)).astype(np.float32)
    return clean, clean + rng.normal(0, 0.3, shape).astype(np.float32)


def test_the_manifest_declares_three_widgets_and_two_samples():
    import npe2

    manifest = npe2.PluginManifest.from_distribution("pairless")
    assert [w.display_name for w in manifest.contributions.widgets] == ["Train", "Denoise", "Evaluate"]
    assert {s.key for s in manifest.contributions.sample_data} == {"pet_phantom", "em_charge"}
    for command in manifest.contributions.commands:  # every python_name resolves to a real object
        module, name = command.python_name.split(":")
        assert callable(getattr(__import__(module, fromlist=[name]), name))


@pytest.mark.slow
def test_training_starts_stops_and_leaves_a_usable_model(viewer, qtbot, tmp_path):
    from pairless.napari._widgets import TrainWidget

    _, noisy = _noisy((96, 96))
    viewer.add_image(noisy, name="noisy", scale=(2.0, 2.0))
    widget = TrainWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.layer_box.currentText() == "noisy" and widget.method_box.currentText() == "n2v"
    widget.overrides = {**TINY, "steps": 100_000}  # would run for hours: only Stop ends it
    widget.out_edit.setText(str(tmp_path / "model"))
    widget.start()
    assert widget.worker is not None and widget.stop_button.isEnabled()
    qtbot.waitUntil(lambda: len(widget.history["val_loss"]) >= 2, timeout=120_000)
    assert widget.progress.maximum() == 100_000 and widget.progress.value() >= 6
    widget.stop()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    assert widget.status.text().startswith("stopped"), widget.status.text()
    config = read_yaml(tmp_path / "model" / "config.yaml")
    assert 3 <= config["best_step"] < 100_000
    assert widget.control.stopped_at is not None and widget.control.stopped_at < 100_000
    layer = viewer.layers["noisy_n2v"]
    assert (
        layer is widget.result_layer and layer.data.shape == noisy.shape and tuple(layer.scale) == (2.0, 2.0)
    )
    # the folder the stopped run left denoises the layer's image to exactly what the widget showed
    np.testing.assert_array_equal(denoise_array(noisy, api.load(tmp_path / "model"), axes="YX"), layer.data)
    assert widget.train_button.isEnabled() and not widget.stop_button.isEnabled()
    assert widget.history["train_loss"]  # the live loss plot had points


def test_denoise_adds_a_layer_from_a_filter_and_reports_bad_models(viewer, qtbot, tmp_path):
    from pairless.napari._widgets import DenoiseWidget

    clean, noisy = _noisy()
    viewer.add_image(noisy, name="noisy")
    widget = DenoiseWidget(viewer)
    qtbot.addWidget(widget)
    widget.source_box.setCurrentText("gaussian")
    widget.sigma_box.setValue(1.5)
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    out = viewer.layers["noisy_gaussian"].data
    assert np.mean((out - clean) ** 2) < 0.5 * np.mean((noisy - clean) ** 2)

    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    widget.source_box.setCurrentText("model folder or BMZ package")
    widget.path_edit.setText(str(bad))
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert widget.status.text().startswith("error:") and "not a readable zip" in widget.status.text()
    assert len(viewer.layers) == 2


def test_the_shipped_prior_is_the_first_choice_and_denoises_a_layer(viewer, qtbot):
    from pairless.napari._widgets import DenoiseWidget

    clean, noisy = _noisy()
    viewer.add_image(noisy, name="noisy")
    widget = DenoiseWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.source_box.currentText() == "prior"
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    out = viewer.layers["noisy_prior"].data
    assert np.mean((out - clean) ** 2) < 0.5 * np.mean((noisy - clean) ** 2)


def test_denoise_runs_a_bmz_package_tiled(viewer, qtbot, tmp_path):
    from pairless.bmz import export_bmz
    from pairless.methods.n2v import N2VConfig
    from pairless.napari._widgets import MODEL, DenoiseWidget

    _, noisy = _noisy((96, 96))
    api.fit("n2v", [noisy], axes="YX", out=tmp_path / "m", config=N2VConfig(**TINY, steps=3), progress=False)
    package = export_bmz(tmp_path / "m", tmp_path / "m.zip", formats=("pytorch_state_dict",))
    viewer.add_image(noisy, name="noisy")
    widget = DenoiseWidget(viewer)
    qtbot.addWidget(widget)
    widget.source_box.setCurrentText(MODEL)  # the prior is the first choice; the browse button does this
    widget.path_edit.setText(str(package))
    widget.tile_box.setValue(64)
    widget.overlap_box.setValue(16)
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    expected = api.load(tmp_path / "m", tile=64, overlap=16)
    import torch

    reference = expected(torch.from_numpy(noisy)[None, None])[0, 0].numpy()
    assert np.abs(viewer.layers["noisy_m"].data - reference).max() <= 1e-5


def test_evaluate_fills_the_metrics_table(viewer, qtbot):
    from pairless.napari._widgets import EvaluateWidget

    clean, noisy = _noisy()
    viewer.add_image(clean, name="clean")
    viewer.add_image(noisy, name="noisy")
    viewer.add_image(0.5 * (noisy + clean), name="better")
    widget = EvaluateWidget(viewer)
    qtbot.addWidget(widget)
    widget.select("noisy", "better")
    widget.reference_box.setCurrentText("clean")
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert widget.table.rowCount() == 2
    header = [widget.table.horizontalHeaderItem(c).text() for c in range(widget.table.columnCount())]
    assert header[:3] == ["image", "PSNR dB", "SI-PSNR dB"]
    psnr = {widget.table.item(r, 0).text(): float(widget.table.item(r, 1).text()) for r in range(2)}
    assert psnr["better"] > psnr["noisy"] + 3


def test_evaluate_gives_nema_recovery_for_the_pet_sample(viewer, qtbot):
    from pairless.napari._sample import pet_phantom
    from pairless.napari._widgets import EvaluateWidget

    layers = pet_phantom(slices=13)
    for data, meta, kind in layers:
        viewer.add_image(data, **meta)
    assert [layer.name for layer in viewer.layers] == ["PET 10 min", "PET 2 min", "PET truth"]
    widget = EvaluateWidget(viewer)
    qtbot.addWidget(widget)
    widget.select("PET 10 min")
    assert widget.sphere_box.value() > 0  # prefilled from the sample's metadata
    widget.nema_box.setChecked(True)
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    header = [widget.table.horizontalHeaderItem(c).text() for c in range(widget.table.columnCount())]
    assert "RCmean 37 mm" in header, (header, widget.status.text())
    rc37 = float(widget.table.item(0, header.index("RCmax 37 mm")).text())
    assert 0.5 < rc37 < 1.5


def test_em_sample_is_noisy_and_in_unit_range():
    from pairless.napari._sample import em_image

    (noisy, _, _), (clean, _, _) = em_image(shape=(128, 128))
    assert noisy.shape == clean.shape == (128, 128) and noisy.dtype == np.float32
    assert 0 <= clean.min() and clean.max() <= 1 and clean.std() > 0.05
    assert 0.001 < np.mean((noisy - clean) ** 2) < 0.1
