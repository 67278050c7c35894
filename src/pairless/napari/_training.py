"""Training from the Train widget: a Lightning callback that reports progress and obeys Stop (no Qt here).

:class:`TrainingControl` reports the trainer's steps and losses through a plain callable (the
widget passes a Qt signal's ``emit``, which is safe to call from the worker thread) and, once
:meth:`TrainingControl.request_stop` is called, sets ``trainer.should_stop``: Lightning ends the
run after the current step, :func:`pairless.training.engine.fit_module` writes its last checkpoint and the
method writes the model folder from the best checkpoint so far.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
from lightning.pytorch.callbacks import Callback


def default_axes(ndim: int) -> str:
    """The axes string napari's usual layouts mean: YX, ZYX, TZYX (then more leading stacks)."""
    if ndim < 2:
        from pairless.errors import PairlessError

        raise PairlessError(f"a {ndim}D layer is not an image; denoise 2D images or 3D volumes")
    return {2: "YX", 3: "ZYX", 4: "TZYX", 5: "TCZYX"}.get(ndim) or "S" * (ndim - 5) + "TCZYX"


class TrainingControl(Callback):
    """Reports ``("start"|"step"|"val", info)`` through ``report`` and stops the run when asked."""

    def __init__(self, report: Callable[[str, dict], None] | None = None):
        self.report = report or (lambda kind, info: None)
        self._stop = threading.Event()
        self.stopped_at: int | None = None

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def on_train_start(self, trainer, pl_module) -> None:
        self.report("start", {"max_steps": trainer.max_steps, "step": trainer.global_step})
        self._check(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = trainer.callback_metrics.get("train_loss")
        self.report(
            "step", {"step": trainer.global_step, "train_loss": None if loss is None else float(loss)}
        )
        self._check(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        loss = trainer.callback_metrics.get("val_loss")
        if loss is not None:
            self.report("val", {"step": trainer.global_step, "val_loss": float(loss)})

    def _check(self, trainer) -> None:
        if self._stop.is_set():
            trainer.should_stop = True
            if self.stopped_at is None:
                self.stopped_at = trainer.global_step


def train_on_image(
    data: np.ndarray,
    *,
    axes: str,
    method: str,
    profile: str,
    out: Path,
    overrides: dict,
    control: TrainingControl,
    denoise: bool = True,
):
    """Train ``method`` on one image; returns ``(folder, denoised or None, stopped, best_step)``.

    Runs in the widget's worker thread.  After a Stop the model folder holds the best checkpoint so
    far, and it is what denoises the image.
    """
    from pairless import api
    from pairless.config import read_yaml
    from pairless.training.modelio import CONFIG_FILE

    model = api.fit(
        method,
        np.asarray(data),
        axes=axes,
        out=Path(out),
        profile=profile,
        progress=False,
        callbacks=[control],
        **overrides,
    )
    best_step = read_yaml(Path(out) / CONFIG_FILE).get("best_step")
    denoised = api.denoise(np.asarray(data), model, axes=axes) if denoise else None
    return Path(out), denoised, control.stop_requested, best_step
