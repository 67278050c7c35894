"""Model folders: what a trained model is on disk, and how it is loaded safely on any machine.

A model folder holds ``config.yaml`` (the method, its configuration, the normalisation and the
versions it was trained with) and ``weights.safetensors``.  Loading never unpickles anything, so a
folder received from someone else cannot run code.  ``method`` in the config names the method whose
loader rebuilds the denoiser (:func:`pairless.methods.registry.load_model`).

The two files are written one after the other, each atomically, with ordinary permissions (``0666``
less the umask, so colleagues in the group can load the model); ``config.yaml`` records the
SHA-256 of the weights it belongs to, so a folder whose write was interrupted between the two
files (or that is being rewritten while it is read) is never loaded as a mismatched pair.  A folder
that a run is training into (see :mod:`pairless.training.lock`) still serves its last complete model.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Collection, Iterable
from pathlib import Path

import numpy as np
import torch

from pairless import __version__
from pairless.config import read_yaml, write_yaml
from pairless.errors import PairlessError
from pairless.io.files import write_bytes

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "weights.safetensors"
WEIGHTS_DIGEST = "weights_sha256"  # in config.yaml: the weights file it belongs to
RUN_FILE = "training_run.yaml"  # which run trains into the folder: method, settings, seed, data digest
# what pairless writes into a model folder; a folder holding anything else is the user's, never trained into
OWN_ENTRIES = {CONFIG_FILE, WEIGHTS_FILE, RUN_FILE, "checkpoints", "training", "training_log.csv", "loss.png"}


def versions() -> dict:
    return {"pairless": __version__, "torch": str(torch.__version__), "python": platform.python_version()}


def save_model_folder(folder: str | os.PathLike, *, config: dict, weights: dict[str, torch.Tensor]) -> Path:
    """Write ``config`` (must contain ``method``) and ``weights`` into ``folder``, each atomically."""
    from safetensors.torch import save

    from pairless.io.files import make_folder

    if not isinstance(config.get("method"), str):
        raise ValueError("config['method'] must name the method that trained the model")
    folder = Path(folder)
    make_folder(folder)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in weights.items()}
    # serialised here and written by us: safetensors' save_file writes its own private (0600) file
    data = save(tensors)
    hint = "the folder's previous model, if any, is intact: free some space and run the same command again"
    write_bytes(folder / WEIGHTS_FILE, data, hint=hint)
    digest = hashlib.sha256(data).hexdigest()
    write_yaml(folder / CONFIG_FILE, {**config, WEIGHTS_DIGEST: digest, "versions": versions()})
    return folder


def read_model_folder(
    folder: str | os.PathLike, *, methods: Collection[str]
) -> tuple[dict, dict[str, torch.Tensor]]:
    """Return ``(config, weights)`` of a model folder trained by one of ``methods``, or raise a one-line
    :class:`PairlessError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    from pairless.training.lock import training_holder

    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        running = training_holder(folder)
        if running is not None:
            raise PairlessError(
                f"{str(folder)!r} is being trained by {running.describe()} and holds no complete model yet; "
                "wait until that run has written its model"
            )
        raise PairlessError(
            f"{str(folder)!r} is not a pairless model folder (it needs {CONFIG_FILE} and {WEIGHTS_FILE}); "
            "train one with `pairless fit` or pass a classical method name (gaussian, median, nlm, bm3d)"
        )
    # a run rewriting the folder replaces the weights, then the config: a mismatch seen while it runs
    # lasts only between those two renames, so look again for a moment before calling the folder damaged
    for attempt in range(50):
        config = read_yaml(folder / CONFIG_FILE)
        if config.get("method") not in methods:
            raise PairlessError(
                f"{str(folder / CONFIG_FILE)!r} names method {config.get('method')!r}, which pairless does"
                f" not know (expected one of {sorted(methods)}); the folder is damaged or from another tool"
            )
        try:
            data = (folder / WEIGHTS_FILE).read_bytes()
        except OSError as err:
            raise PairlessError(
                f"{str(folder / WEIGHTS_FILE)!r} cannot be read ({err.strerror or err}); check its"
                " permissions"
            ) from None
        digest = config.get(WEIGHTS_DIGEST)
        if digest is None or hashlib.sha256(data).hexdigest() == digest:
            break
        if attempt < 49 and training_holder(folder) is not None:
            time.sleep(0.1)
            continue
        raise PairlessError(
            f"{str(folder / WEIGHTS_FILE)!r} does not belong to {str(folder / CONFIG_FILE)!r} (writing the"
            " model folder was interrupted); run the training command again to finish it"
        )
    try:
        weights = load(data)
    except (SafetensorError, OSError, ValueError) as err:
        raise PairlessError(
            f"{str(folder / WEIGHTS_FILE)!r} is not a readable safetensors file ({err}); "
            "the model folder is damaged: train the model again or copy the folder again"
        ) from None
    return config, weights


def model_summary(folder: str | os.PathLike) -> str:
    """``"n2v, best step 400, written 2026-01-02 10:11"``: which model a folder serves, for messages."""
    folder = Path(folder)
    try:
        config = read_yaml(folder / CONFIG_FILE)
        written = time.strftime("%Y-%m-%d %H:%M", time.localtime((folder / WEIGHTS_FILE).stat().st_mtime))
    except (OSError, PairlessError):
        return "unknown"
    step = f", best step {config['best_step']}" if "best_step" in config else ""
    return f"{config.get('method')}{step}, written {written}"


def run_record(method: str, settings: dict, *, seed: int, data: Iterable[np.ndarray]) -> dict:
    """What makes a training run the same run: its method, settings, seed and the SHA-256 of its data.

    How long it runs (``steps``) is not part of it: resuming with more steps trains the same run longer.
    """
    settings = {k: v for k, v in settings.items() if k != "steps"}
    digest = hashlib.sha256()
    for array in data:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return {"method": method, "settings": settings, "seed": seed, "data_sha256": digest.hexdigest()}


def check_is_model_folder(folder: str | os.PathLike) -> None:
    """Refuse a folder that holds anything pairless does not write there: it is the user's, not a model's."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise PairlessError(f"{folder} exists and is not a folder; choose another --out for the model")
    from pairless.training.lock import LOCK_FILE

    if folder.is_dir():
        foreign = sorted(
            p.name
            for p in folder.iterdir()
            if p.name not in OWN_ENTRIES and p.name != LOCK_FILE and not p.name.startswith(".")
        )
        if foreign:
            raise PairlessError(
                f"{folder} holds files pairless did not write ({', '.join(foreign[:3])}"
                f"{', ...' if len(foreign) > 3 else ''}), so it is not a model folder; choose a new or empty "
                f"--out (--overwrite never replaces your own files)"
            )


def run_digest(record: dict) -> str:
    """The SHA-256 of a :func:`run_record`; ``config.yaml`` keeps it as ``run_sha256``."""
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def claim_model_folder(
    folder: str | os.PathLike, record: dict, *, resume: bool | None, overwrite: bool, longer: bool = False
) -> bool | None:
    """How a run may train into ``folder`` (whose lock it holds): the ``resume`` the engine gets, or one line.

    An empty folder starts afresh.  An unfinished run of the same data and settings (:func:`run_record`)
    goes on from its checkpoints (``resume`` ``None`` or ``True``), as does a finished one asked for more
    steps (``longer``).  The finished model of this same run is trained again only with ``overwrite`` (or
    written again from its last checkpoint with ``resume``).  The
    model or run of other data, settings or method is replaced only with ``overwrite``, never resumed.
    """
    folder = Path(folder)
    stored = read_yaml(folder / RUN_FILE) if (folder / RUN_FILE).is_file() else None
    model = read_yaml(folder / CONFIG_FILE) if (folder / CONFIG_FILE).is_file() else None
    occupied = model is not None or stored is not None or (folder / "checkpoints").exists()
    ours = model is not None and model.get("run_sha256") == run_digest(record)
    same = stored == record
    if not occupied:
        fresh = True
    elif ours and not longer:
        if not (resume or overwrite):
            raise PairlessError(
                f"{folder} already holds this finished model; pass --overwrite to train it again, or choose "
                f"another --out"
            )
        fresh = not resume
    elif same or ours:
        fresh = resume is False
    elif resume:
        raise PairlessError(
            f"{folder} holds a run of other data or settings; --resume continues only the same run: run the "
            f"command that started it, or pass --overwrite to train afresh"
        )
    elif overwrite:
        fresh = True
    else:
        what = f"a {model.get('method', 'pairless')} model" if model else "an unfinished training run"
        raise PairlessError(
            f"{folder} already holds {what} of other data or settings; pass --overwrite to replace it, or "
            f"choose another --out"
        )
    if fresh or not same:
        write_yaml(folder / RUN_FILE, record)
    return False if fresh else resume
