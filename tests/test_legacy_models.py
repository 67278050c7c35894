"""Models written before the layout change (tests/data/legacy, see its README) load and denoise as they did.

Every model folder, and every BioImage Model Zoo package that commit 17e51c3 exported, is loaded with
:func:`pairless.api.load` and denoises its fixed input under fp32 PyTorch to what that commit computed.
The methods that could not be exported then still cannot, with the same message.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pairless import api
from pairless.denoiser import denoise_array
from pairless.errors import PairlessError
from pairless.inference.engines import use_engine

LEGACY = Path(__file__).resolve().parent / "data" / "legacy"
MANIFEST = json.loads((LEGACY / "manifest.json").read_text())
PACKAGED = sorted(name for name, entry in MANIFEST.items() if entry["bmz"])
REFUSED = sorted(name for name, entry in MANIFEST.items() if not entry["bmz"])
# learned methods that 17e51c3 did not have: no model folder of theirs predates the layout change
ADDED_SINCE = {"adn", "cagan", "uidnet", "r2r"}

pytestmark = pytest.mark.usefixtures("one_thread")


def _input(kind: str, axes: str) -> np.ndarray:
    return np.load(LEGACY / f"input_{kind}{'3d' if axes == 'ZYX' else '2d'}.npy")


def _same(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5 * float(np.ptp(expected)))


def test_the_manifest_covers_every_learned_method():
    from pairless.config import read_yaml
    from pairless.methods import registry

    methods = {read_yaml(LEGACY / name / "config.yaml")["method"] for name in MANIFEST}
    assert methods == set(registry.names(*registry.LEARNED)) - ADDED_SINCE
    assert all((LEGACY / name / "expected.npy").is_file() for name in MANIFEST)


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_a_legacy_model_folder_denoises_as_before(name, tmp_path):
    axes = MANIFEST[name]["axes"]
    folder = shutil.copytree(LEGACY / name, tmp_path / name)  # loading must not touch the fixture
    with use_engine("torch-fp32"):
        out = denoise_array(_input("", axes), api.load(folder), axes=axes)
    _same(out, np.load(LEGACY / name / "expected.npy"))


@pytest.mark.parametrize("name", PACKAGED)
def test_a_legacy_bmz_package_denoises_as_before(name, tmp_path):
    axes = MANIFEST[name]["axes"]
    package = shutil.copy(LEGACY / MANIFEST[name]["bmz"], tmp_path / MANIFEST[name]["bmz"])
    with use_engine("torch-fp32"):
        out = denoise_array(_input("bmz_", axes), api.load(package), axes=axes)
    _same(out, np.load(LEGACY / f"{name}.bmz.expected.npy"))


@pytest.mark.parametrize("name", REFUSED)
def test_a_legacy_model_that_could_not_be_exported_still_cannot(name, tmp_path):
    folder = shutil.copytree(LEGACY / name, tmp_path / name)
    kind, _, message = MANIFEST[name]["bmz_error"].partition(": ")
    assert kind == "PairlessError"
    with pytest.raises(PairlessError) as caught:
        api.export(
            folder,
            tmp_path / f"{name}.zip",
            sample=_input("bmz_", MANIFEST[name]["axes"]),
            authors=["pairless tests"],
        )
    assert str(caught.value).splitlines()[0] == message
    assert not (tmp_path / f"{name}.zip").exists()
