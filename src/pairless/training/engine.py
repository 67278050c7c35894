"""The training engine every learned method shares: Lightning with crash-safe checkpoints and loss logs.

:func:`fit_module` trains any :class:`lightning.LightningModule` (automatic or manual optimisation)
that logs ``train_loss`` in ``training_step`` and ``val_loss`` in ``validation_step``.  It keeps
in ``out_dir``:

- ``checkpoints/last.ckpt`` after every validation and at the end, and ``checkpoints/best.ckpt``
  (lowest ``val_loss``), each written to a temporary file and renamed, so a run killed at any
  moment (even SIGKILL) leaves the previous checkpoint intact and can be resumed;
- ``training_log.csv``: one row per validation with the step, the mean of every training metric
  since the previous row, the validation metrics and the learning rate;
- ``loss.png``: the training and validation loss curves.

Nothing is written to the working directory (no ``lightning_logs/``).

With ``devices > 1``, or when started by ``torchrun``, training is data-parallel with Lightning's
DDP strategy (gloo on CPUs, NCCL on GPUs); only global rank 0 writes into ``out_dir``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import shutil
import signal
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from pairless.errors import PairlessError
from pairless.io.files import atomic_path, human, make_folder, write_bytes
from pairless.training import lock

FEATURE_MAPS = 32
LAST = "last.ckpt"
BEST = "best.ckpt"
LOG_CSV = "training_log.csv"
LOSS_PNG = "loss.png"


class _AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, but through a temporary file and a rename (Lightning writes in place).

    The checkpoint is serialised in memory first and written with plain file writes, so a full disk
    or a missing permission is a one-line :class:`~pairless.io.files.WriteError` that names the file and
    its exact size (torch's own writer reports it as ``RuntimeError: ... unexpected pos``), and the
    previous checkpoint under that name stays intact.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        path = Path(path)
        kept = sorted(p.name for p in path.parent.glob("*.ckpt"))
        hint = (
            f"the checkpoints written before ({', '.join(kept)}) are intact: free some space and run the same"
            " command again to resume from them"
            if kept
            else "free some space and run the same command again"
        )
        write_bytes(path, buffer.getbuffer(), hint=hint)


class _BestAndLast(ModelCheckpoint):
    """Keeps ``best.ckpt`` (lowest ``val_loss``) and writes ``last.ckpt`` after *every* validation.

    Lightning's ``save_last`` only writes when a new best is saved, which would lose the progress made
    since the last improvement on a crash.  Being a ModelCheckpoint, it runs after the other callbacks,
    so their state for this validation is in the checkpoint.
    """

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if not trainer.sanity_checking:
            trainer.save_checkpoint(Path(self.dirpath) / LAST)


class _TrainingLog(Callback):
    """Collects one row per validation; its rows travel inside the checkpoints, so a resumed run's log is
    whole."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.rows: list[dict[str, float]] = []
        self._sums: dict[str, float] = {}
        self._count = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        for key, value in trainer.callback_metrics.items():
            if not key.startswith("val"):
                self._sums[key] = self._sums.get(key, 0.0) + float(value)
        self._count += 1

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        row: dict[str, float] = {"step": trainer.global_step}
        row.update({k: v / max(self._count, 1) for k, v in self._sums.items()})
        row.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val")})
        if trainer.optimizers:
            row["lr"] = trainer.optimizers[0].param_groups[0]["lr"]
        self.rows.append(row)
        self._sums, self._count = {}, 0
        if trainer.is_global_zero:
            write_log_csv(self.out_dir / LOG_CSV, self.rows)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])


class _FiniteLoss(Callback):
    """Stops a run whose loss turns NaN or infinite: its weights are lost, and more steps cannot help."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = trainer.callback_metrics.get("train_loss")
        if loss is not None and not torch.isfinite(loss):
            lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
            raise PairlessError(
                f"training diverged at step {trainer.global_step}: the loss is {float(loss)}; lower lr (it is"
                f" {lr:g}) or check the images for outliers; no model was written (earlier checkpoints are"
                " kept)"
            )


class Interrupted(BaseException):
    """A training run stopped by SIGINT or SIGTERM; its last checkpoint is kept for ``--resume``.

    A ``BaseException`` like ``KeyboardInterrupt``, so no ``except Exception`` in between swallows it;
    Lightning lets it through after tearing the run down (a ``KeyboardInterrupt`` it would turn into a
    silent exit).
    """

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.step: int | None = None
        self.checkpoint_step: int | None = None


@contextlib.contextmanager
def _interruptible():
    """SIGINT and SIGTERM raise :class:`Interrupted` inside the block (main thread only: signals are
    delivered there; napari trains in a worker thread and stops through its own callback)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def check_step_memory(*, batch: int, pixels: int, width: int) -> None:
    """Refuse, before anything is allocated or written, a batch whose training step cannot fit in memory.

    A step keeps roughly :data:`FEATURE_MAPS` full-resolution feature maps of the network's first-level
    ``width`` for its backward pass (the U-Nets and residual nets trained here); ``pixels`` is one
    patch's voxel count.
    """
    need = batch * pixels * width * FEATURE_MAPS * 4
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > total:
        raise PairlessError(
            f"a training step of batch_size {batch} with {pixels}-pixel patches needs about {human(need)} of "
            f"memory, more than this machine has ({human(total)}); lower batch_size or patch_size"
        )


class _StepProgress(Callback):
    """One bar over the whole run (steps, not epochs: an "epoch" here is only a validation interval)."""

    progress = None

    def on_train_start(self, trainer, pl_module) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("training"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[loss]}"),
        )
        self.progress.start()
        self.task = self.progress.add_task(
            "train", total=trainer.max_steps, completed=trainer.global_step, loss=""
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        shown = {k: float(v) for k, v in trainer.callback_metrics.items() if k in ("train_loss", "val_loss")}
        loss = "  ".join(f"{k.replace('_', ' ')} {v:.4g}" for k, v in shown.items())
        self.progress.update(self.task, completed=trainer.global_step, loss=loss)

    def on_train_end(self, trainer, pl_module) -> None:
        self.progress.stop()

    def on_exception(self, trainer, pl_module, exception) -> None:
        if self.progress is not None:
            self.progress.stop()


def write_log_csv(path: Path, rows: list[dict[str, float]]) -> None:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def plot_losses(path: Path, rows: list[dict[str, float]]) -> None:
    """Training and validation loss against the step, as a PNG (Agg canvas: no GUI, no global backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for key, style in (("train_loss", "-"), ("val_loss", "--")):
        points = [(r["step"], r[key]) for r in rows if key in r]
        if points:
            ax.plot(*zip(*points), style, label=key.replace("_", " "))
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def _readable_step(path: Path) -> int | None:
    """The global step stored in a checkpoint, or ``None`` if it is missing or unreadable."""
    if not path.is_file():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        return int(ckpt["global_step"])
    except Exception:  # any damage (truncation, wrong format) means: do not resume from this file
        return None


def _remove_partial_files(*folders: Path) -> None:
    """Delete the temporary files a killed run left in ``folders`` (ours: we hold the folder's lock)."""
    for folder in folders:
        if folder.is_dir():
            for leftover in folder.glob(".*.part*"):
                if leftover.is_file():
                    leftover.unlink(missing_ok=True)


def _resume_point(ckpt_dir: Path, *, max_steps: int, resume: bool | None) -> Path | None:
    """The checkpoint to continue from, or ``None`` to start afresh (clearing old checkpoints)."""
    if resume is False:
        return None
    for name in (LAST, BEST):
        step = _readable_step(ckpt_dir / name)
        if step is None:
            if (ckpt_dir / name).exists():
                warnings.warn(
                    f"checkpoint {ckpt_dir / name} is damaged; resuming from the previous good checkpoint, or"
                    " from scratch if there is none",
                    stacklevel=3,
                )
            continue
        if resume is None and step >= max_steps:
            return None  # a finished run: retrain from scratch
        return ckpt_dir / name
    if resume:
        warnings.warn(f"nothing to resume in {ckpt_dir}; starting a new run", stacklevel=3)
    return None


def _process_layout(devices: int) -> tuple[int, int]:
    """``(devices per node, nodes)``: torchrun's layout when it started us, else ``devices`` on one node."""
    if devices < 1:
        raise PairlessError(f"--devices must be at least 1, got {devices}")
    if "LOCAL_WORLD_SIZE" not in os.environ or "GROUP_RANK" not in os.environ:
        return devices, 1
    local, world = int(os.environ["LOCAL_WORLD_SIZE"]), int(os.environ["WORLD_SIZE"])
    if devices not in (1, local):
        raise PairlessError(
            f"--devices {devices} conflicts with torchrun's --nproc_per_node {local}; drop --devices under"
            " torchrun"
        )
    return local, world // local


def _is_rank_zero() -> bool:
    """Whether this is global rank 0, known before the Trainer exists (torchrun and Lightning set it)."""
    from lightning.pytorch.utilities import rank_zero_only

    return rank_zero_only.rank == 0


@contextlib.contextmanager
def _quiet_lightning():
    """Silence Lightning's banners and advice about data loader workers (we load in-process on purpose)."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*is smaller than the logging interval.*")
        warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.* is deprecated")
        # a model folder copied elsewhere and resumed: Lightning notes the checkpoints' old folder name
        warnings.filterwarnings("ignore", message=".*dirpath has changed.*")
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def fit_module(
    module: L.LightningModule,
    train_loader,
    val_loader,
    *,
    out_dir: Path,
    max_steps: int,
    val_every_n_steps: int,
    seed: int,
    resume: bool | None = None,
    precision: str = "32-true",
    progress: bool = True,
    devices: int = 1,
    use_distributed_sampler: bool = True,
    callbacks: Sequence[Callback] = (),
) -> Path:
    """Train ``module`` for ``max_steps`` optimiser steps, validating every ``val_every_n_steps``.

    Parameters
    ----------
    module : logs ``train_loss`` (per step) and ``val_loss`` (per validation).
    train_loader, val_loader : batches for ``training_step`` and ``validation_step`` (both required;
        an N2V-style loader whose length is ``val_every_n_steps`` makes an epoch one validation interval).
    out_dir : receives ``checkpoints/``, ``training_log.csv`` and ``loss.png``.
    seed : seeds torch's generator inside a forked RNG state, so the caller's global state is untouched.
    resume : ``True`` continue from ``out_dir``'s last checkpoint, ``False`` start afresh, ``None``
        continue only if ``out_dir`` holds an unfinished run.  A damaged last checkpoint is reported in
        one warning and the best one (or a fresh start) is used instead.
    precision : Lightning precision, e.g. ``"32-true"``, ``"bf16-mixed"``, ``"16-mixed"``.
    devices : data-parallel processes (GPUs, or CPU processes) on this node; under ``torchrun`` its
        ``--nproc_per_node`` and ``--nnodes`` decide instead.  Each process runs ``max_steps`` steps on
        its own batches, so the effective batch is ``devices`` times the loader's.
    callbacks : extra Lightning callbacks (e.g. a GUI's progress and Stop button: a callback that sets
        ``trainer.should_stop`` ends the run after the step, with its checkpoints written as usual).
    use_distributed_sampler : let Lightning split the loaders' indices among the processes; ``False``
        when the train loader draws distinct batches per rank itself (every rank then validates on
        the whole validation set, so all ranks agree on the best checkpoint).

    Returns
    -------
    Path of the checkpoint with the lowest validation loss (the last one if no validation ran); in a
    multi-process run the file is on global rank 0's file system.

    A full disk or an unwritable folder stops training with a one-line
    :class:`~pairless.io.files.WriteError`; the checkpoints written before are intact and the same call
    resumes from them.
    """
    per_node, nodes = _process_layout(devices)
    out_dir = Path(out_dir)
    return _fit(
        module,
        train_loader,
        val_loader,
        out_dir=out_dir,
        ckpt_dir=out_dir / "checkpoints",
        max_steps=max_steps,
        val_every_n_steps=val_every_n_steps,
        seed=seed,
        resume=resume,
        precision=precision,
        progress=progress,
        per_node=per_node,
        nodes=nodes,
        use_distributed_sampler=use_distributed_sampler,
        callbacks=callbacks,
    )


def train_model_folder(
    module: L.LightningModule,
    train_loader,
    val_loader,
    *,
    folder: str | os.PathLike,
    export: Callable[[Path], tuple[dict, dict[str, torch.Tensor]]],
    record: dict,
    resume: bool | None = None,
    overwrite: bool = False,
    logs: str | None = None,
    **options,
) -> tuple[dict, dict[str, torch.Tensor]] | None:
    """Train ``module`` (:func:`fit_module` with ``options``) and write the model folder ``folder``.

    This is how every learned method's training ends.  ``export(best)`` turns the checkpoint with the
    lowest validation loss into the folder's ``config.yaml`` settings and weights, which are written
    (:func:`~pairless.training.modelio.save_model_folder`) and returned.  Training logs and checkpoints go
    to ``folder`` or, with ``logs``, to that subfolder of it.  In a data-parallel run only global rank 0
    writes and returns; the other processes return ``None``.

    Rank 0 holds the folder's lock (:mod:`pairless.training.lock`) from the start until the model is
    written or training fails (or the process dies): a second run into the same folder stops with one
    line naming this one.  Whether the run may use the folder at all, and whether it continues what is
    there, is decided first from ``record`` (:func:`~pairless.training.modelio.claim_model_folder`):
    nothing of the user's, nor another run's model, is replaced without ``overwrite``.
    """
    from pairless.training.modelio import (
        check_is_model_folder,
        claim_model_folder,
        run_digest,
        save_model_folder,
    )

    folder = Path(folder)
    owner = _is_rank_zero()
    if owner:
        check_is_model_folder(folder)
        lock.acquire(folder)
    try:
        if owner:
            checkpoints = (folder / logs if logs else folder) / "checkpoints"
            done = [s for s in (_readable_step(checkpoints / n) for n in (LAST, BEST)) if s is not None]
            longer = bool(done) and done[0] < options["max_steps"]  # a finished run asked for more steps
            resume = claim_model_folder(folder, record, resume=resume, overwrite=overwrite, longer=longer)
        best = fit_module(
            module,
            train_loader,
            val_loader,
            out_dir=folder / logs if logs else folder,
            resume=resume,
            **options,
        )
        if rank_and_world()[0] != 0:
            return None
        config, weights = export(best)
        config = {**config, "run_sha256": run_digest(record)}
        save_model_folder(folder, config=config, weights=weights)
        return config, weights
    finally:
        if owner:
            lock.release(folder)


def train_on_patches(
    module: L.LightningModule,
    train_set: torch.utils.data.Dataset,
    val_set: torch.utils.data.Dataset,
    *,
    config,
    folder: str | os.PathLike,
    export: Callable[[Path], tuple[dict, dict[str, torch.Tensor]]],
    record: dict,
    seed: int,
    resume: bool | None,
    overwrite: bool,
    progress: bool,
) -> tuple[dict, dict[str, torch.Tensor]]:
    """:func:`train_model_folder` for a method trained on patch datasets of two image sets (unpaired or
    paired): batches of ``config.batch_size`` for ``config.steps`` steps, logs in ``folder/training``."""
    return train_model_folder(
        module,
        torch.utils.data.DataLoader(train_set, batch_size=config.batch_size, drop_last=True),
        torch.utils.data.DataLoader(val_set, batch_size=config.batch_size),
        folder=folder,
        logs="training",
        export=export,
        record=record,
        resume=resume,
        overwrite=overwrite,
        max_steps=config.steps,
        val_every_n_steps=min(config.val_every, config.steps),
        seed=seed,
        precision=config.precision,
        progress=progress,
    )


def rank_and_world() -> tuple[int, int]:
    """``(global rank, world size)`` of a data-parallel run, ``(0, 1)`` in a single process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _fit(
    module,
    train_loader,
    val_loader,
    *,
    out_dir: Path,
    ckpt_dir: Path,
    max_steps: int,
    val_every_n_steps: int,
    seed: int,
    resume: bool | None,
    precision: str,
    progress: bool,
    per_node: int,
    nodes: int,
    use_distributed_sampler: bool,
    callbacks: Sequence[Callback] = (),
) -> Path:
    if _is_rank_zero():
        _remove_partial_files(out_dir, ckpt_dir)
    start = _resume_point(ckpt_dir, max_steps=max_steps, resume=resume)
    if start is None and ckpt_dir.exists() and _is_rank_zero():
        shutil.rmtree(ckpt_dir)
    make_folder(ckpt_dir)
    if per_node * nodes > 1:
        from pairless.nets.global_norm import global_batch_norm

        global_batch_norm(module)
    with _quiet_lightning(), torch.random.fork_rng(devices=[]):
        best = _BestAndLast(
            dirpath=ckpt_dir,
            filename=BEST.removesuffix(".ckpt"),
            monitor="val_loss",
            mode="min",
            save_top_k=1,
            enable_version_counter=False,
        )
        log = _TrainingLog(out_dir)
        trainer = L.Trainer(
            max_steps=max_steps,
            max_epochs=-1,
            val_check_interval=val_every_n_steps,
            check_val_every_n_epoch=None,
            num_sanity_val_steps=0,
            precision=precision,
            devices=per_node,
            num_nodes=nodes,
            strategy="ddp" if per_node * nodes > 1 else "auto",
            use_distributed_sampler=use_distributed_sampler,
            callbacks=[
                *callbacks,
                _FiniteLoss(),
                log,
                best,
                *([_StepProgress()] if progress and _is_rank_zero() else []),
            ],
            plugins=[_AtomicCheckpointIO()],
            logger=False,
            default_root_dir=out_dir,
            enable_progress_bar=False,
            enable_model_summary=False,
            log_every_n_steps=1,
        )
        torch.manual_seed(seed)
        try:
            with _interruptible():
                trainer.fit(module, train_loader, val_loader, ckpt_path=start)
        except Interrupted as stopped:
            stopped.step, stopped.checkpoint_step = trainer.global_step, _readable_step(ckpt_dir / LAST)
            raise
        trainer.save_checkpoint(ckpt_dir / LAST)
    if trainer.is_global_zero:
        write_log_csv(out_dir / LOG_CSV, log.rows)
        plot_losses(out_dir / LOSS_PNG, log.rows)
    return Path(best.best_model_path) if best.best_model_path else ckpt_dir / LAST
