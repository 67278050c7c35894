"""Reproducibility: the same seed on one machine gives bit-identical weights files; the folder says how."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import pairless
from pairless import api
from pairless.config import read_yaml
from pairless.methods.n2v import N2VConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _fit(folder, *, seed: int, precision: str):
    image = np.random.default_rng(5).normal(0, 1, (2, 64, 64)).astype(np.float32)
    config = N2VConfig(
        patch_size=32, batch_size=4, filters=8, steps=6, val_every=3, mask_fraction=0.01, precision=precision
    )
    api.fit("n2v", [image], axes="SYX", out=folder, config=config, progress=False, seed=seed)
    return load_file(str(folder / "weights.safetensors")), config


# bf16-mixed with channels-last is what "auto" picks on a bf16 CPU: it is deterministic too
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_same_seed_gives_identical_weight_files_and_another_seed_does_not(tmp_path, precision):
    first, _ = _fit(tmp_path / "a", seed=11, precision=precision)
    again, _ = _fit(tmp_path / "b", seed=11, precision=precision)
    other, _ = _fit(tmp_path / "c", seed=12, precision=precision)
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    trained = [k for k in first if k.endswith("weight")]
    assert not any(torch.equal(first[k], other[k]) for k in trained)


@pytest.mark.slow
def test_model_folder_records_versions_seed_and_config(tmp_path):
    _, config = _fit(tmp_path / "m", seed=3, precision="32-true")
    saved = read_yaml(tmp_path / "m" / "config.yaml")
    assert saved["versions"]["pairless"] == pairless.__version__
    assert saved["versions"]["torch"] == str(torch.__version__)
    assert saved["seed"] == 3 and saved["method"] == "n2v" and saved["world_size"] == 1
    assert N2VConfig.from_dict({k: v for k, v in saved.items() if k in N2VConfig.model_fields}) == config
