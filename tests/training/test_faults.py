"""Fault injection: SIGKILL during a checkpoint write, a model-folder write and an output write.

Each run is a forked child (see ``faultkit``) killed at a write drawn at random (several seeds) over
every write an uninterrupted run makes to the files in question: mid-``write`` (part of the bytes on
disk), before its ``fsync``, or just before or after its rename; the output runs are also killed by
a timer at a random moment.  After each kill no file under its final name is partial, and running
the same command again completes to the same result as an uninterrupted run, bit for bit (CPU,
one thread: training and resuming are deterministic).  The counts are printed at the end of the module.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml
from faultkit import Faults, count_writes, run_forked

from pairless.errors import PairlessError
from pairless.methods import registry
from pairless.training.modelio import read_model_folder

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN = dict(
    patch_size=32, batch_size=4, filters=8, precision="32-true", mask_fraction=0.01, steps=8, val_every=4
)
SEEDS = (0, 1, 2)
TALLY = {"faults injected": 0, "runs recovered": 0, "outputs lost": 0}


@pytest.fixture(scope="module", autouse=True)
def _report_counts(request):
    yield
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\nfault suite: {TALLY}")


@pytest.fixture(scope="module")
def training(tmp_path_factory):
    """The training command and its uninterrupted result (model folder ``ref``)."""
    root = tmp_path_factory.mktemp("train")
    np.save(root / "img.npy", np.random.default_rng(0).normal(0, 1, (64, 64)).astype(np.float32))
    (root / "cfg.yaml").write_text(yaml.safe_dump(TRAIN))
    argv = ["fit", "n2v", str(root / "img.npy"), "--config", str(root / "cfg.yaml"), "--out"]
    tally = {name: _selector(name, "ref") for name in ("checkpoint", "model")}
    code, counts, _ = count_writes([*argv, str(root / "ref")], lambda path: False, root, tally=tally)
    assert code == 0 and min(counts.values()) > 0, counts
    return root, argv, root / "ref", counts


def _selector(where: str, folder: str):
    """Writes into ``folder``'s checkpoints, or into its own files (weights, config, log, curve)."""
    if where == "checkpoint":
        return lambda path: f"/{folder}/checkpoints" in path
    return lambda path: f"/{folder}" in path and f"/{folder}/checkpoints" not in path


def _check_whole(folder: Path, ref: Path) -> None:
    """Every file under a final name in a training folder is complete; temporary ones may remain."""
    from PIL import Image as PILImage
    from safetensors.torch import load_file

    for path in folder.rglob("*"):
        if path.is_dir() or ".part" in path.name or path.name == ".pairless.lock":
            continue
        if path.suffix == ".ckpt":
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            assert checkpoint["global_step"] in range(
                TRAIN["val_every"], TRAIN["steps"] + 1, TRAIN["val_every"]
            ), path
        elif path.suffix == ".safetensors":
            load_file(str(path))
        elif path.suffix == ".yaml":
            assert yaml.safe_load(path.read_text())["method"] == "n2v"
        elif path.suffix == ".csv":
            text = path.read_text()
            assert text.endswith("\n") and (ref / path.name).read_text().startswith(text), "a partial log"
            assert list(csv.DictReader(text.splitlines()))
        elif path.suffix == ".png":
            with PILImage.open(path) as im:
                im.verify()
        else:
            raise AssertionError(f"unexpected file {path}")
    if (folder / "config.yaml").exists() and (folder / "weights.safetensors").exists():
        try:  # a mismatched pair (killed between the two renames) must be refused, never loaded
            config, weights = read_model_folder(folder, methods=registry.names(*registry.LEARNED))
        except PairlessError as err:
            assert "does not belong" in str(err)


def _same_model(folder: Path, ref: Path) -> bool:
    return all(
        (folder / name).read_bytes() == (ref / name).read_bytes()
        for name in ("weights.safetensors", "config.yaml", "training_log.csv")
    )


@pytest.mark.slow
@pytest.mark.parametrize("where", ["checkpoint", "model"])
@pytest.mark.parametrize("seed", SEEDS)
def test_training_killed_mid_write_leaves_whole_files_and_resumes_to_the_same_model(training, where, seed):
    root, argv, ref, counts = training
    folder = root / f"run-{where}-{seed}"
    select = _selector(where, folder.name)
    rng = np.random.default_rng(100 + seed)
    kill_at = int(rng.integers(1, counts[where] + 1))
    code = run_forked([*argv, str(folder)], faults=Faults(select, kill_at=kill_at, seed=seed))
    assert code == -9, f"the run was not killed at write {kill_at} of {counts[where]}"
    TALLY["faults injected"] += 1
    _check_whole(folder, ref)
    assert run_forked([*argv, str(folder)]) == 0  # the same command again
    if not _same_model(folder, ref):
        TALLY["outputs lost"] += 1
        pytest.fail(f"rerun after a kill at write {kill_at} gave another model")
    TALLY["runs recovered"] += 1
    assert not list(folder.rglob("*.part*")) and not (folder / ".pairless.lock").exists()


@pytest.fixture(scope="module")
def denoising(tmp_path_factory):
    """A denoise command over TIFF, .npy and .zarr inputs, and its uninterrupted output folder."""
    import zarr

    root = tmp_path_factory.mktemp("denoise")
    rng = np.random.default_rng(1)
    inputs = []
    for i in range(5):
        tifffile.imwrite(root / f"frame{i}.tif", rng.normal(100, 10, (40, 48)).astype(np.float32))
        inputs.append(root / f"frame{i}.tif")
    np.save(root / "stack.npy", rng.normal(0, 1, (3, 32, 32)).astype(np.float32))
    array = zarr.create_array(
        store=str(root / "vol.zarr"), shape=(4, 32, 32), chunks=(2, 16, 16), dtype="float32"
    )
    array[:] = rng.normal(0, 1, (4, 32, 32)).astype(np.float32)
    array.attrs["axes"] = "ZYX"
    inputs += [root / "stack.npy", root / "vol.zarr"]
    argv = ["denoise", "gaussian", *map(str, inputs), "--sigma", "1", "--block", "16", "--halo", "4", "--out"]
    code, count, seconds = count_writes([*argv, str(root / "ref")], lambda p: "/ref" in p, root)
    assert code == 0
    return root, argv, root / "ref", count, seconds


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _outputs(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if not p.name.startswith(".")] if folder.is_dir() else []


@pytest.mark.parametrize("kind", ["write", "timer"])
@pytest.mark.parametrize("seed", SEEDS)
def test_denoising_killed_mid_write_leaves_no_partial_output_and_reruns_to_the_same_files(
    denoising, kind, seed
):
    root, argv, ref, count, seconds = denoising
    out = root / f"out-{kind}-{seed}"
    rng = np.random.default_rng(200 + seed)
    if kind == "write":
        faults = Faults(
            lambda p: f"/out-{kind}-{seed}" in p, kill_at=int(rng.integers(1, count + 1)), seed=seed
        )
    else:
        faults = Faults(lambda p: False, after_s=float(rng.uniform(0.05, 0.9) * seconds), seed=seed)
    code = run_forked([*argv, str(out)], faults=faults)
    if kind == "write":
        assert code == -9
    if code == -9:
        TALLY["faults injected"] += 1
        for path in _outputs(out):  # whatever is under a final name is a finished output, whole
            finished = _tree(path) if path.is_dir() else {"": path.read_bytes()}
            expected = _tree(ref / path.name) if path.is_dir() else {"": (ref / path.name).read_bytes()}
            if finished != expected:
                TALLY["outputs lost"] += 1
                pytest.fail(f"{path} is partial after the kill")
    # the rerun replaces what the killed run finished (the user says so: those outputs exist now)
    assert run_forked([*argv, str(out), "--overwrite"]) == 0
    assert _tree(out) == _tree(ref), "the rerun's outputs differ from an uninterrupted run's"
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "a staging folder was left behind"
    if code == -9:
        TALLY["runs recovered"] += 1
