"""Model folders from someone else can never run code: no pickle is ever loaded."""

import pickle

import pytest
import torch
import yaml

from pairless import PairlessError
from pairless.methods import registry
from pairless.methods.registry import load_model
from pairless.training.modelio import CONFIG_FILE, WEIGHTS_FILE, read_model_folder, save_model_folder

METHODS = registry.names(*registry.LEARNED)


class _Payload:
    """Unpickling this calls ``marker.touch()``: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (type(self.marker).touch, (self.marker,))


def _planted_folder(tmp_path, weights_bytes: bytes):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / CONFIG_FILE).write_text(yaml.safe_dump({"method": "n2v"}))
    (folder / WEIGHTS_FILE).write_bytes(weights_bytes)
    return folder


def test_a_pickle_posing_as_weights_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    folder = _planted_folder(tmp_path, pickle.dumps({"w": _Payload(marker)}))
    with pytest.raises(PairlessError, match="not a readable safetensors file"):
        load_model(folder)
    assert not marker.exists()


def test_a_torch_checkpoint_posing_as_weights_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "ckpt.pt"
    torch.save({"w": torch.zeros(2), "evil": _Payload(marker)}, path)
    assert not marker.exists()
    folder = _planted_folder(tmp_path, path.read_bytes())
    with pytest.raises(PairlessError):
        load_model(folder)
    assert not marker.exists()


def test_a_yaml_config_with_python_tags_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "model"
    save_model_folder(folder, config={"method": "n2v"}, weights={"w": torch.zeros(3)})
    (folder / CONFIG_FILE).write_text(
        "method: n2v\nx: !!python/object/apply:pathlib.Path.touch [!!python/object/apply:pathlib.Path"
        f" ['{marker}']]\n"
    )
    with pytest.raises(PairlessError, match="not valid YAML"):
        read_model_folder(folder, methods=METHODS)
    assert not marker.exists()


def test_safe_round_trip_keeps_weights_and_records_versions(tmp_path):
    weights = {"conv.weight": torch.randn(4, 1, 3, 3), "conv.bias": torch.randn(4)}
    save_model_folder(tmp_path / "m", config={"method": "n2v", "depth": 2}, weights=weights)
    config, loaded = read_model_folder(tmp_path / "m", methods=METHODS)
    assert config["depth"] == 2 and {"pairless", "torch"} <= set(config["versions"])
    for name, tensor in weights.items():
        assert torch.equal(loaded[name], tensor)


def test_unknown_method_is_refused(tmp_path):
    save_model_folder(tmp_path / "m", config={"method": "n2v"}, weights={"w": torch.zeros(1)})
    (tmp_path / "m" / CONFIG_FILE).write_text(yaml.safe_dump({"method": "evil_module"}))
    with pytest.raises(PairlessError, match="does not know"):
        load_model(tmp_path / "m")
