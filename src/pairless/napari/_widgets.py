"""The three dock widgets: Train, Denoise and Evaluate.

Each long computation runs in a napari thread worker, so the viewer stays responsive; results come
back to the GUI thread (new layers, the metrics table).  Errors a user can cause are pairless's
one-line :class:`PairlessError` messages, shown in the widget's status line and as a napari
notification.  The widgets only use ``viewer.layers`` and ``viewer.add_image``, so they work with
a full :class:`napari.Viewer` or a bare ``ViewerModel`` (tests).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from pairless.errors import PairlessError
from pairless.inference.tiling import DEFAULT_TILE
from pairless.methods import registry
from pairless.napari._training import TrainingControl, default_axes, train_on_image

MODEL = "model folder or BMZ package"
CLASSICAL = tuple(registry.names("classical"))
PRIOR = "prior"  # the prior that ships with pairless: the first choice, no model to pick


def _image_layers(viewer) -> list:
    from napari.layers import Image

    return [layer for layer in viewer.layers if isinstance(layer, Image) and not getattr(layer, "rgb", False)]


class _LayerCombo(QComboBox):
    """The viewer's (non-RGB) image layers by name, kept up to date as layers come and go."""

    def __init__(self, viewer, *, optional: str | None = None):
        super().__init__()
        self.viewer, self.optional = viewer, optional
        self.refresh()
        for event in ("inserted", "removed", "reordered"):
            getattr(viewer.layers.events, event).connect(self.refresh)

    def refresh(self, *_):
        current = self.currentText()
        self.blockSignals(True)
        self.clear()
        if self.optional:
            self.addItem(self.optional)
        self.addItems([layer.name for layer in _image_layers(self.viewer)])
        index = self.findText(current)
        if index >= 0:
            self.setCurrentIndex(index)
        self.blockSignals(False)

    def layer(self):
        name = self.currentText()
        if not name or name == self.optional or name not in self.viewer.layers:
            return None
        return self.viewer.layers[name]


def _notify_error(message: str) -> None:
    try:
        from napari.utils.notifications import show_error

        show_error(message)
    except Exception:  # pragma: no cover - notifications are a nicety
        pass


def _message(err: BaseException) -> str:
    return str(err) if isinstance(err, PairlessError) else f"{type(err).__name__}: {err}"


def _add_result(viewer, source, data: np.ndarray, name: str):
    """Add ``data`` as a new image layer beside ``source``: same scale and position, its own contrast."""
    return viewer.add_image(
        data,
        name=name,
        scale=source.scale,
        translate=source.translate,
        colormap=source.colormap.name,
        metadata={"pairless": {"source_layer": source.name}},
    )


# --------------------------------------------------------------------------------------------------


class _TrainSignals(QObject):
    event = Signal(
        str, object
    )  # "start" {max_steps, step} | "step" {step, train_loss} | "val" {step, val_loss}


class TrainWidget(QWidget):
    """Train a self-supervised denoiser on an image layer; progress, live loss curves and a Stop button.

    Stop ends training at the next step: the model folder then holds the best checkpoint so far (the
    last weights if no validation ran yet), and the layer is denoised with it when "denoise when done"
    is ticked.
    """

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self.control: TrainingControl | None = None
        self.overrides: dict = {}  # extra settings on top of the profile (tests use tiny networks)
        self.history: dict[str, list[tuple[int, float]]] = {"train_loss": [], "val_loss": []}
        self.model_folder: Path | None = None
        self.result_layer = None

        self.layer_box = _LayerCombo(napari_viewer)
        self.method_box = QComboBox()
        # one image layer trains a single-image method; Noise2Noise needs pairs (`pairless fit n2n --pairs`)
        self.method_box.addItems(registry.names("self-supervised"))
        self.profile_box = QComboBox()
        self.method_box.currentTextChanged.connect(self._profiles)
        self._profiles(self.method_box.currentText())
        self.steps_box = QSpinBox()
        self.steps_box.setRange(0, 1_000_000)
        self.steps_box.setSpecialValueText("profile's")
        self.axes_edit = QLineEdit()
        self.axes_edit.setPlaceholderText("from the layer: YX, ZYX, TZYX")
        self.out_edit = QLineEdit()
        self.out_edit.setPlaceholderText("~/pairless-models/<layer>-<method>")
        self.denoise_box = QCheckBox("denoise the layer when done")
        self.denoise_box.setChecked(True)
        self.train_button = QPushButton("Train")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m steps")
        self.status = QLabel("pick an image layer and press Train")
        self.status.setWordWrap(True)
        self._plot()

        form = QFormLayout()
        form.addRow("image", self.layer_box)
        form.addRow("method", self.method_box)
        form.addRow("profile", self.profile_box)
        form.addRow("steps", self.steps_box)
        form.addRow("axes", self.axes_edit)
        form.addRow("model folder", self.out_edit)
        buttons = QHBoxLayout()
        buttons.addWidget(self.train_button)
        buttons.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.denoise_box)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.canvas)
        layout.addWidget(self.status)
        self.train_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.signals = _TrainSignals()
        self.signals.event.connect(self._on_event)
        self._last_draw = 0.0

    def _profiles(self, method: str) -> None:
        self.profile_box.clear()
        try:
            self.profile_box.addItems(list(registry.get(method).config_class.PROFILES))
        except Exception:  # a method whose module fails to import: offer the default profile
            self.profile_box.addItem("quick")

    def _plot(self) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(3.2, 2.0), dpi=100, tight_layout=True)
        self.canvas = FigureCanvasQTAgg(figure)
        self.canvas.setMinimumHeight(160)
        self.axes = figure.add_subplot()
        self._draw()

    def _draw(self) -> None:
        ax = self.axes
        ax.clear()
        for key, style in (("train_loss", "-"), ("val_loss", "o--")):
            points = self.history[key]
            if points:
                ax.plot(*zip(*points), style, label=key.replace("_", " "), markersize=3)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("loss", fontsize=8)
        ax.tick_params(labelsize=7)
        if any(self.history.values()):
            if all(v > 0 for points in self.history.values() for _, v in points):
                ax.set_yscale("log")
            ax.legend(fontsize=7)
        self.canvas.draw_idle()

    # ---- running

    def default_folder(self, layer_name: str, method: str) -> Path:
        """``~/pairless-models/<layer>-<method>``, numbered (``-2``, ``-3``) past the folders already there: a
        model trained before is never replaced by default."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in layer_name) or "image"
        base = Path(os.path.expanduser("~")) / "pairless-models" / f"{safe}-{method}"
        folder, n = base, 1
        while folder.exists():
            n += 1
            folder = base.with_name(f"{base.name}-{n}")
        return folder

    def start(self) -> None:
        from napari.qt.threading import create_worker

        if self.worker is not None:
            return
        layer = self.layer_box.layer()
        if layer is None:
            self._fail("no image layer to train on; open an image (or File > Open Sample > pairless) first")
            return
        method, profile = self.method_box.currentText(), self.profile_box.currentText()
        data = np.asarray(layer.data)
        axes = self.axes_edit.text().strip().upper() or default_axes(data.ndim)
        out = (
            Path(os.path.expanduser(self.out_edit.text().strip()))
            if self.out_edit.text().strip()
            else self.default_folder(layer.name, method)
        )
        overrides = dict(self.overrides)
        if self.steps_box.value():
            overrides["steps"] = self.steps_box.value()
        self.history = {"train_loss": [], "val_loss": []}
        self._draw()
        self.control = TrainingControl(report=self.signals.event.emit)
        self.model_folder, self.result_layer = out, None
        self._layer, self._name = layer, f"{layer.name}_{method}"
        self.worker = create_worker(
            train_on_image,
            data,
            axes=axes,
            method=method,
            profile=profile,
            out=out,
            overrides=overrides,
            control=self.control,
            denoise=self.denoise_box.isChecked(),
            _start_thread=False,
            _ignore_errors=True,
        )
        self.worker.returned.connect(self._on_done)
        self.worker.errored.connect(lambda err: self._fail(_message(err)))
        self.worker.finished.connect(self._on_finished)
        self.train_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.progress.setRange(0, 0)  # busy until the trainer reports its steps
        self.status.setText(f"training {method} ({profile}) on {layer.name!r}, axes {axes} -> {out}")
        self.worker.start()

    def stop(self) -> None:
        if self.control is not None:
            self.control.request_stop()
            self.stop_button.setEnabled(False)
            self.status.setText("stopping after this step; the best checkpoint so far is kept")

    def _on_event(self, kind: str, info: dict) -> None:
        if kind == "start":
            self.progress.setRange(0, int(info["max_steps"]))
            self.progress.setValue(int(info["step"]))
            return
        if kind == "step":
            self.progress.setValue(int(info["step"]))
            if info.get("train_loss") is not None:
                self.history["train_loss"].append((int(info["step"]), float(info["train_loss"])))
        elif kind == "val":
            self.history["val_loss"].append((int(info["step"]), float(info["val_loss"])))
        now = time.monotonic()
        if kind == "val" or now - self._last_draw > 0.25:  # redraw at most 4 times a second
            self._last_draw = now
            self._draw()

    def _on_done(self, result) -> None:
        folder, denoised, stopped, best_step = result
        self._draw()
        what = "stopped; the best checkpoint so far" if stopped else "done; the best checkpoint"
        self.status.setText(f"{what} (step {best_step}) is in {folder}")
        if denoised is not None:
            self.result_layer = _add_result(self.viewer, self._layer, denoised, self._name)

    def _on_finished(self) -> None:
        self.worker = None
        self.train_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)

    def _fail(self, message: str) -> None:
        self.status.setText(f"error: {message}")
        _notify_error(message)


# --------------------------------------------------------------------------------------------------


def make_denoiser(
    source: str,
    path: str,
    *,
    sigma: float | None,
    size: int | None,
    auto: bool,
    tile: int,
    overlap: int,
    tta: bool,
    vst: bool = False,
    engine: str = "torch",
):
    """The shipped prior (``sigma``: its noise σ, else measured per image), a classical filter by name, or the
    model in a folder or BMZ package (read, never run)."""
    from pairless import api

    if source == PRIOR:
        return api.load(PRIOR, sigma=sigma, tile=tile, overlap=overlap, tta=tta, engine=engine)
    if source in CLASSICAL:
        return api.load(source, sigma=sigma, size=size, auto=auto, vst=vst)
    target = Path(os.path.expanduser(path.strip())) if path.strip() else None
    if target is None or not target.exists():
        raise PairlessError(
            f"{path!r} is not an existing model folder or BMZ package (.zip); pick one with Browse"
        )
    return api.load(target, tile=tile, overlap=overlap, tta=tta, engine=engine)


def denoise_layer_data(data: np.ndarray, *, axes: str, **options) -> np.ndarray:
    from pairless import api

    return api.denoise(np.asarray(data), make_denoiser(**options), axes=axes)


class DenoiseWidget(QWidget):
    """Denoise an image layer with the shipped prior, a trained model (folder or BMZ package) or a classical
    filter; tiled."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self.result_layer = None
        self.layer_box = _LayerCombo(napari_viewer)
        self.source_box = QComboBox()
        self.source_box.addItems([PRIOR, MODEL, *CLASSICAL])
        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("model folder or .zip")
        folder_button, zip_button = QPushButton("Folder…"), QPushButton(".zip…")
        folder_button.clicked.connect(self._pick_folder)
        zip_button.clicked.connect(self._pick_zip)
        path_row = QHBoxLayout()
        path_row.addWidget(self.path_edit)
        path_row.addWidget(folder_button)
        path_row.addWidget(zip_button)
        self.sigma_box = QDoubleSpinBox()
        self.sigma_box.setRange(0, 1e6)
        self.sigma_box.setDecimals(3)
        self.sigma_box.setSpecialValueText("default")
        self.size_box = QSpinBox()
        self.size_box.setRange(0, 99)
        self.size_box.setSpecialValueText("default")
        self.auto_box = QCheckBox("tune by J-invariance (no clean image needed)")
        self.tile_box = QSpinBox()
        self.tile_box.setRange(16, 4096)
        self.tile_box.setValue(DEFAULT_TILE)
        self.overlap_box = QSpinBox()
        self.overlap_box.setRange(0, 1024)
        self.overlap_box.setValue(32)
        self.tta_box = QCheckBox("8-fold test-time augmentation")
        self.axes_edit = QLineEdit()
        self.axes_edit.setPlaceholderText("from the layer: YX, ZYX, TZYX")
        self.run_button = QPushButton("Denoise")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form = QFormLayout()
        form.addRow("image", self.layer_box)
        form.addRow("denoiser", self.source_box)
        form.addRow("model", path_row)
        form.addRow("noise σ (prior, nlm, bm3d; Gaussian σ in pixels)", self.sigma_box)
        form.addRow("median size", self.size_box)
        form.addRow("", self.auto_box)
        form.addRow("tile", self.tile_box)
        form.addRow("overlap", self.overlap_box)
        form.addRow("", self.tta_box)
        form.addRow("axes", self.axes_edit)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.run_button)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch()
        self.run_button.clicked.connect(self.run)

    def _pick_folder(self):
        folder = QFileDialog.getExistingDirectory(self, "pairless model folder")
        if folder:
            self.path_edit.setText(folder)
            self.source_box.setCurrentText(MODEL)

    def _pick_zip(self):
        path, _ = QFileDialog.getOpenFileName(
            self, "BioImage Model Zoo package", filter="BMZ package (*.zip)"
        )
        if path:
            self.path_edit.setText(path)
            self.source_box.setCurrentText(MODEL)

    def options(self) -> dict:
        return {
            "source": self.source_box.currentText(),
            "path": self.path_edit.text(),
            "sigma": self.sigma_box.value() or None,
            "size": self.size_box.value() or None,
            "auto": self.auto_box.isChecked(),
            "tile": self.tile_box.value(),
            "overlap": self.overlap_box.value(),
            "tta": self.tta_box.isChecked(),
        }

    def run(self) -> None:
        from napari.qt.threading import create_worker

        from pairless.napari._training import default_axes

        if self.worker is not None:
            return
        layer = self.layer_box.layer()
        if layer is None:
            self._fail("no image layer to denoise; open an image first")
            return
        options = self.options()
        label = (
            options["source"]
            if options["source"] in (PRIOR, *CLASSICAL)
            else Path(options["path"].strip()).stem or "model"
        )
        axes = self.axes_edit.text().strip().upper() or default_axes(np.ndim(layer.data))
        self._layer, self._name = layer, f"{layer.name}_{label}"
        self.worker = create_worker(
            denoise_layer_data, layer.data, axes=axes, _start_thread=False, _ignore_errors=True, **options
        )
        self.worker.returned.connect(self._on_done)
        self.worker.errored.connect(lambda err: self._fail(_message(err)))
        self.worker.finished.connect(self._on_finished)
        self.run_button.setEnabled(False)
        self.progress.setRange(0, 0)
        self.status.setText(f"denoising {layer.name!r} ({axes}) with {label}")
        self.worker.start()

    def _on_done(self, data: np.ndarray) -> None:
        self.result_layer = _add_result(self.viewer, self._layer, data, self._name)
        self.status.setText(f"added layer {self.result_layer.name!r}")

    def _on_finished(self) -> None:
        self.worker = None
        self.run_button.setEnabled(True)
        self.progress.setRange(0, 1)
        self.progress.setValue(1)

    def _fail(self, message: str) -> None:
        self.status.setText(f"error: {message}")
        _notify_error(message)


# --------------------------------------------------------------------------------------------------


def score_layers(
    images: dict[str, np.ndarray],
    reference: np.ndarray | None,
    *,
    data_range: float | None,
    gaussian: bool,
    nema: dict | None,
) -> list[dict]:
    """Metrics of each image against ``reference`` and/or its NEMA IQ recovery coefficients."""
    from pairless import api

    nema = nema or {}
    return api.evaluate(
        images,
        reference=reference,
        data_range=data_range,
        gaussian_ssim=gaussian,
        phantom="nema" if nema else None,
        voxel_size=nema.get("voxel_size"),
        sphere_activity=nema.get("sphere_activity"),
        background_activity=nema.get("background_activity"),
        units=nema.get("units"),
        activity_units=nema.get("activity_units", "kBq/mL"),
    )


class EvaluateWidget(QWidget):
    """Score image layers against a reference layer (PSNR, SSIM, NRMSE, SI-PSNR) and/or by NEMA IQ RCs."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self.rows: list[dict] = []
        self.images = QListWidget()
        self.images.setSelectionMode(QAbstractItemView.MultiSelection)
        self.images.setMaximumHeight(90)
        self.reference_box = _LayerCombo(napari_viewer, optional="(no reference)")
        for event in ("inserted", "removed", "reordered"):
            getattr(napari_viewer.layers.events, event).connect(self._refresh_images)
        self._refresh_images()
        self.range_box = QDoubleSpinBox()
        self.range_box.setRange(0, 1e12)
        self.range_box.setDecimals(4)
        self.range_box.setSpecialValueText("reference max − min")
        self.gaussian_box = QCheckBox("Gaussian SSIM window (Wang et al.)")
        self.nema_box = QCheckBox("NEMA IQ sphere recovery (3D PET)")
        self.sphere_box = QDoubleSpinBox()
        self.sphere_box.setRange(0, 1e9)
        self.sphere_box.setDecimals(3)
        self.background_box = QDoubleSpinBox()
        self.background_box.setRange(0, 1e9)
        self.background_box.setDecimals(3)
        self.background_box.setSpecialValueText("measured")
        self.activity_units_box = QComboBox()
        self.activity_units_box.addItems(["kBq/mL", "Bq/mL", "MBq/mL", "g/mL", "image"])
        self.units_box = QComboBox()  # the layer's own units, when its metadata states them
        self.units_box.addItems(["from the layer", "kBq/mL", "Bq/mL", "MBq/mL", "g/mL"])
        self.run_button = QPushButton("Evaluate")
        self.table = QTableWidget(0, 0)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setMinimumHeight(140)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form = QFormLayout()
        form.addRow("images", self.images)
        form.addRow("reference", self.reference_box)
        form.addRow("data range", self.range_box)
        form.addRow("", self.gaussian_box)
        form.addRow("", self.nema_box)
        form.addRow("sphere activity", self.sphere_box)
        form.addRow("background", self.background_box)
        form.addRow("activity units", self.activity_units_box)
        form.addRow("image units", self.units_box)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.run_button)
        layout.addWidget(self.table)
        layout.addWidget(self.status)
        self.run_button.clicked.connect(self.run)
        self.images.itemSelectionChanged.connect(self._prefill)

    def _refresh_images(self, *_):
        chosen = {item.text() for item in self.images.selectedItems()}
        self.images.clear()
        for layer in _image_layers(self.viewer):
            self.images.addItem(layer.name)
            if layer.name in chosen:
                self.images.item(self.images.count() - 1).setSelected(True)

    def _prefill(self):
        """Sphere and background activities from a pairless sample layer's metadata."""
        for item in self.images.selectedItems():
            meta = (self.viewer.layers[item.text()].metadata or {}).get("pairless", {})
            if "sphere_activity" in meta and not self.sphere_box.value():
                self.sphere_box.setValue(float(meta["sphere_activity"]))
                self.background_box.setValue(float(meta.get("background_activity") or 0))

    def select(self, *names: str) -> None:
        for i in range(self.images.count()):
            item = self.images.item(i)
            item.setSelected(item.text() in names)

    def run(self) -> None:
        from napari.qt.threading import create_worker

        if self.worker is not None:
            return
        names = [item.text() for item in self.images.selectedItems()]
        if not names:
            self._fail("select the image layers to score")
            return
        layers = {n: self.viewer.layers[n] for n in names}
        reference = self.reference_box.layer()
        nema = None
        if self.nema_box.isChecked():
            if not self.sphere_box.value():
                self._fail("NEMA recovery needs the true sphere activity (in the activity units)")
                return
            first = next(iter(layers.values()))
            nema = {
                "voxel_size": tuple(float(s) for s in first.scale[-3:]),
                "sphere_activity": self.sphere_box.value(),
                "background_activity": self.background_box.value() or None,
                "activity_units": self.activity_units_box.currentText(),
                "units": (
                    (first.metadata or {}).get("pairless", {}).get("units")
                    if self.units_box.currentIndex() == 0
                    else self.units_box.currentText()
                ),
            }
        self.worker = create_worker(
            score_layers,
            {n: layer.data for n, layer in layers.items()},
            None if reference is None else reference.data,
            data_range=self.range_box.value() or None,
            gaussian=self.gaussian_box.isChecked(),
            nema=nema,
            _start_thread=False,
            _ignore_errors=True,
        )
        self.worker.returned.connect(self.show_rows)
        self.worker.errored.connect(lambda err: self._fail(_message(err)))
        self.worker.finished.connect(self._on_finished)
        self.run_button.setEnabled(False)
        self.status.setText(f"scoring {', '.join(names)}")
        self.worker.start()

    def show_rows(self, rows: list[dict]) -> None:
        self.rows = rows
        columns = ["image"]
        if rows and "psnr" in rows[0]:
            columns += ["PSNR dB", "SI-PSNR dB", "SSIM", "NRMSE"]
        spheres = [s["diameter_mm"] for s in rows[0].get("spheres", [])] if rows else []
        columns += [f"RCmean {d:g} mm" for d in spheres] + [f"RCmax {d:g} mm" for d in spheres]
        self.table.setColumnCount(len(columns))
        self.table.setHorizontalHeaderLabels(columns)
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            values = [row["image"]]
            if "psnr" in row:
                values += [
                    f"{row['psnr']:.2f}",
                    f"{row['si_psnr']:.2f}",
                    f"{row['ssim']:.4f}",
                    f"{row['nrmse']:.4f}",
                ]
            values += [f"{s['rc_mean']:.3f}" for s in row.get("spheres", [])]
            values += [f"{s['rc_max']:.3f}" for s in row.get("spheres", [])]
            for c, value in enumerate(values):
                item = QTableWidgetItem(value)
                item.setTextAlignment(
                    int(Qt.AlignRight | Qt.AlignVCenter) if c else int(Qt.AlignLeft | Qt.AlignVCenter)
                )
                self.table.setItem(r, c, item)
        self.table.resizeColumnsToContents()
        conventions = rows[0].get("conventions", {}) if rows else {}
        if "data_range" in conventions:
            self.status.setText(
                f"data range {conventions['data_range']:g}; SSIM window {conventions['ssim_window']}"
            )
        else:
            self.status.setText("")

    def _on_finished(self) -> None:
        self.worker = None
        self.run_button.setEnabled(True)

    def _fail(self, message: str) -> None:
        self.status.setText(f"error: {message}")
        _notify_error(message)
