"""The prior that ships with pairless: a model folder inside the package, read by the safe loader.

``shipped/`` holds ``config.yaml`` and ``weights.safetensors`` as ``pairless pretrain`` wrote them, and
``PROVENANCE.md``: every training run that produced the weights (command, commit, data and licences, wall
time, machine) and the benchmark rows they gave, with the weights' SHA-256.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from pairless.errors import PairlessError

FOLDER = Path(__file__).with_name("shipped")
PROVENANCE = FOLDER / "PROVENANCE.md"


def provenance_digest() -> str:
    """The weights' SHA-256 that ``PROVENANCE.md`` records (its line ``weights SHA-256: <hex>``)."""
    found = re.search(r"weights SHA-256:\s*`?([0-9a-f]{64})", PROVENANCE.read_text(encoding="utf-8"))
    if found is None:
        raise PairlessError(
            f"{PROVENANCE} records no weights SHA-256; the installation is damaged: reinstall pairless"
        )
    return found.group(1)


def shipped_digest() -> str:
    from pairless.training.modelio import WEIGHTS_FILE

    return hashlib.sha256((FOLDER / WEIGHTS_FILE).read_bytes()).hexdigest()


def load_shipped() -> tuple[dict, dict]:
    """``(config, weights)`` of the shipped prior, read by the model-folder loader (nothing is executed)."""
    from pairless.training.modelio import read_model_folder

    if not FOLDER.is_dir():
        raise PairlessError(f"the shipped prior is missing ({FOLDER}); reinstall pairless")
    return read_model_folder(FOLDER, methods=("prior",))
