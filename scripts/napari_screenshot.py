"""Render the README's screenshot of the pairless napari plugin: docs/napari.png.

Opens napari with the simulated EM sample, docks the Train, Denoise and Evaluate widgets, trains a
small Noise2Void for a few hundred steps (live loss curves, then the denoised layer), scores the
noisy and denoised layers against the clean one, and saves the whole window.  Needs a display; on a
headless machine run it under Xvfb:

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/napari_screenshot.py

It takes a minute or two on a laptop CPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "napari.png")
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args(argv)

    import napari
    from qtpy.QtWidgets import QApplication

    from pairless.napari._sample import em_image

    viewer = napari.Viewer(title="pairless in napari", show=True)
    viewer.window._qt_window.resize(1600, 1000)
    for data, meta, _ in em_image(shape=(256, 256)):
        viewer.add_image(data, **meta)
    _, train = viewer.window.add_plugin_dock_widget("pairless", "Train")
    _, denoise = viewer.window.add_plugin_dock_widget("pairless", "Denoise", tabify=False)
    _, evaluate = viewer.window.add_plugin_dock_widget("pairless", "Evaluate", tabify=False)

    def settle(seconds: float = 0.5) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            QApplication.processEvents()
            time.sleep(0.02)

    def wait(widget, seconds: float) -> None:
        end = time.monotonic() + seconds
        while widget.worker is not None and time.monotonic() < end:
            settle(0.1)
        if widget.worker is not None:
            raise SystemExit(f"{type(widget).__name__} did not finish within {seconds:.0f} s")

    with tempfile.TemporaryDirectory() as tmp:
        train.layer_box.setCurrentText("EM charge noise")
        train.overrides = {"patch_size": 64, "batch_size": 16, "filters": 16, "val_every": 25, "lr": 4e-3}
        train.steps_box.setValue(args.steps)
        train.out_edit.setText(str(Path(tmp) / "em-n2v"))
        train.start()
        wait(train, 900)
        denoise.layer_box.setCurrentText("EM charge noise")
        denoise.source_box.setCurrentText("median")
        denoise.size_box.setValue(3)
        denoise.run()
        wait(denoise, 120)
        evaluate.select("EM charge noise", "EM charge noise_n2v", "EM charge noise_median")
        evaluate.reference_box.setCurrentText("EM clean")
        evaluate.range_box.setValue(1.0)
        evaluate.run()
        wait(evaluate, 120)
    viewer.layers["EM charge noise_median"].visible = False  # side by side: the noisy image and N2V's result
    viewer.layers.selection.active = viewer.layers["EM charge noise_n2v"]
    viewer.grid.enabled = True
    viewer.reset_view()
    settle(1.0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(args.out), canvas_only=False, flash=False)
    print(f"wrote {args.out}")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
