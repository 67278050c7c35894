"""Model folders: what a trained model is on disk, and how it is loaded safely on any machine.

A model folder holds ``config.yaml`` (the method, its configuration, the normalisation and the
versions it was trained with) and ``weights.safetensors``.  Loading never unpickles anything, so a
folder received from someone else cannot run code.  ``method`` in the config picks the loader
from :data:`LOADERS`; each learned method module provides ``load_denoiser(config, weights)``.
"""

from __future__ import annotations

import importlib
import os
import platform
from pathlib import Path

import torch

from pairless import __version__
from pairless.config import read_yaml, write_yaml
from pairless.denoiser import Denoiser
from pairless.errors import PairlessError
from pairless.files import atomic_path

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "weights.safetensors"

# method name -> module providing ``load_denoiser(config: dict, weights: dict, **prediction_options)``
LOADERS = {
    "n2v": "pairless.methods.n2v",
    "iscl": "pairless.methods.iscl",
    "supervised": "pairless.methods.supervised",
}


def versions() -> dict:
    return {"pairless": __version__, "torch": str(torch.__version__), "python": platform.python_version()}


def save_model_folder(folder: str | os.PathLike, *, config: dict, weights: dict[str, torch.Tensor]) -> Path:
    """Write ``config`` (must contain ``method``) and ``weights`` into ``folder``, each atomically."""
    from safetensors.torch import save_file

    if config.get("method") not in LOADERS:
        raise ValueError(f"config['method'] must be one of {sorted(LOADERS)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in weights.items()}
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp))
    write_yaml(folder / CONFIG_FILE, {**config, "versions": versions()})
    return folder


def read_model_folder(folder: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """Return ``(config, weights)`` of a model folder, or raise a one-line :class:`PairlessError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise PairlessError(
            f"{str(folder)!r} is not a pairless model folder (it needs {CONFIG_FILE} and {WEIGHTS_FILE}); "
            f"train one with `pairless fit` or pass a classical method name (gaussian, median, nlm, bm3d)"
        )
    config = read_yaml(folder / CONFIG_FILE)
    if config.get("method") not in LOADERS:
        raise PairlessError(
            f"{str(folder / CONFIG_FILE)!r} names method {config.get('method')!r}, which pairless does not "
            f"know (expected one of {sorted(LOADERS)}); the folder is damaged or from another tool"
        )
    try:
        weights = load_file(str(folder / WEIGHTS_FILE))
    except (SafetensorError, OSError, ValueError) as err:
        raise PairlessError(
            f"{str(folder / WEIGHTS_FILE)!r} is not a readable safetensors file ({err}); "
            f"the model folder is damaged: train the model again or copy the folder again"
        ) from None
    return config, weights


def load_denoiser(folder: str | os.PathLike, **prediction_options) -> Denoiser:
    """Load the denoiser stored in a model folder; options (tile, overlap, tta) go to its predictor."""
    config, weights = read_model_folder(folder)
    module = importlib.import_module(LOADERS[config["method"]])
    return module.load_denoiser(config, weights, **prediction_options)
