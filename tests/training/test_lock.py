"""The model-folder lock: one run trains into a folder at a time, a crash never blocks the next run,
and denoising from a folder being trained uses its last complete model and says so."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml
from faultkit import Faults, start_forked

from pairless.cli import main
from pairless.errors import PairlessError
from pairless.io.processes import start_ticks
from pairless.training import lock

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN = dict(
    patch_size=32, batch_size=4, filters=8, precision="32-true", mask_fraction=0.01, steps=12, val_every=4
)


def _hold_in_child(folder: Path) -> int:
    """A child process that takes ``folder``'s lock and sleeps until it is killed; returns its pid."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            lock.acquire(folder)
            os.write(write, b"1")
            time.sleep(600)
        finally:
            os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.close(read)
    return pid


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def test_a_second_taker_is_refused_with_the_holder_named_and_a_killed_holder_frees_it(tmp_path):
    folder = tmp_path / "m"
    pid = _hold_in_child(folder)
    try:
        with pytest.raises(
            PairlessError, match=rf"is in use by pid {pid} on {socket.gethostname()}, started"
        ):
            lock.acquire(folder)
        held = lock.holder(folder)
        assert held is not None and held.pid == pid
    finally:
        _kill(pid)
    assert (folder / lock.LOCK_FILE).exists()  # SIGKILL left the file, stale
    assert lock.holder(folder) is None
    lock.acquire(folder)
    assert lock.holds(folder) and lock.holder(folder) is None  # our own lock is no one else's run
    lock.acquire(folder)  # again: nothing
    assert json.loads((folder / lock.LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release(folder)
    assert not (folder / lock.LOCK_FILE).exists() and not lock.holds(folder)


def _sleeper() -> int:
    pid = os.fork()
    if pid == 0:
        time.sleep(600)
        os._exit(0)
    return pid


def test_where_flock_is_not_enforced_a_live_holder_on_this_host_still_counts(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    pid = _sleeper()
    try:
        record = {
            "pid": pid,
            "host": socket.gethostname(),
            "started": time.time(),
            "ticks": start_ticks(pid),
            "command": "pairless fit n2v a.tif --out m",
        }
        (folder / lock.LOCK_FILE).write_text(
            json.dumps(record)
        )  # no flock held: as on a file system without it
        with pytest.raises(PairlessError, match=rf"pid {pid} .*`pairless fit n2v a.tif --out m`.*delete"):
            lock.acquire(folder)
        # the same pid with another start time is a reused pid: the lock is stale
        (folder / lock.LOCK_FILE).write_text(json.dumps({**record, "ticks": record["ticks"] + 1}))
        lock.acquire(folder)
        lock.release(folder)
    finally:
        _kill(pid)
    dead = _sleeper()
    _kill(dead)
    (folder / lock.LOCK_FILE).write_text(json.dumps({"pid": dead, "host": socket.gethostname()}))
    lock.acquire(folder)  # a crashed run's file
    lock.release(folder)


@pytest.fixture
def training(tmp_path):
    np.save(tmp_path / "img.npy", np.random.default_rng(0).normal(0, 1, (64, 64)).astype(np.float32))
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(TRAIN))
    return ["fit", "n2v", str(tmp_path / "img.npy"), "--config", str(tmp_path / "cfg.yaml")]


@pytest.mark.slow
def test_two_runs_into_one_folder_do_not_mix_and_denoising_meanwhile_uses_the_last_complete_model(
    tmp_path, training, capsys
):
    folder = tmp_path / "m"
    assert main([*training, "--out", str(folder)]) == 0  # a finished model: what denoising should use
    shutil.copytree(folder, tmp_path / "m-before")
    capsys.readouterr()

    # another seed into a finished model's folder is refused without --overwrite, and nothing changes
    assert main([*training, "--out", str(folder), "--seed", "1"]) == 2
    assert "already holds a n2v model of other data or settings" in capsys.readouterr().err
    weights = (folder / "weights.safetensors").read_bytes()
    assert weights == (tmp_path / "m-before" / "weights.safetensors").read_bytes()

    # a second training (another seed, --overwrite) into the same folder, paused at its second checkpoint
    paused = tmp_path / "paused"
    child = start_forked(
        [*training, "--out", str(folder), "--seed", "1", "--overwrite"],
        faults=Faults(lambda p: p.endswith("/checkpoints/last.ckpt"), kill_at=2, pause_file=paused),
    )
    try:
        deadline = time.monotonic() + 120
        while not paused.exists():
            assert time.monotonic() < deadline and not os.waitpid(child, os.WNOHANG)[0], (
                "the training never paused"
            )
            time.sleep(0.05)

        assert main([*training, "--out", str(folder), "--seed", "2"]) == 2  # a third run is refused
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {folder} is in use by pid {child} on "), err
        command = lock._command()  # the child's command line is ours (forked): `python -m pytest ...`
        assert command.endswith(" ".join(sys.argv[1:]))
        assert f"started {time.strftime('%Y-%m-%d')}" in err[0] and f"`{command}`" in err[0]

        image = tmp_path / "noisy.tif"
        tifffile.imwrite(image, np.random.default_rng(3).normal(0, 1, (48, 48)).astype(np.float32))
        assert main(["denoise", str(folder), str(image), "--out", str(tmp_path / "during")]) == 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"note: {folder} is being trained by pid {child}"), err
        assert "using its last complete model (n2v, best step" in err[0]
    finally:
        _kill(child)
    assert main(["denoise", str(tmp_path / "m-before"), str(image), "--out", str(tmp_path / "before")]) == 0
    assert capsys.readouterr().err == ""  # not being trained: no note
    assert (tmp_path / "during" / "noisy.tif").read_bytes() == (
        tmp_path / "before" / "noisy.tif"
    ).read_bytes()

    # the killed run is resumed with --resume, and ends as an uninterrupted seed-1 run
    assert (folder / lock.LOCK_FILE).exists()
    assert main([*training, "--out", str(folder), "--seed", "1", "--resume"]) == 0
    assert not (folder / lock.LOCK_FILE).exists()
    assert main([*training, "--out", str(tmp_path / "ref"), "--seed", "1"]) == 0
    for name in ("weights.safetensors", "config.yaml", "training_log.csv"):
        assert (folder / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name
    assert (
        torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == TRAIN["steps"]
    )


def test_a_folder_being_trained_without_a_model_yet_is_refused_for_denoising(tmp_path, capsys):
    folder = tmp_path / "m"
    image = tmp_path / "a.tif"
    tifffile.imwrite(image, np.ones((16, 16), np.float32))
    pid = _hold_in_child(folder)
    try:
        assert main(["denoise", str(folder), str(image), "--out", str(tmp_path / "out")]) == 2
    finally:
        _kill(pid)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"is being trained by pid {pid}" in err[0] and "no complete model yet" in err[0]


@pytest.mark.slow
def test_a_model_folder_killed_between_its_two_files_is_never_loaded_as_a_mismatched_pair(tmp_path, training):
    from pairless.methods import registry
    from pairless.training.modelio import read_model_folder

    folder = tmp_path / "m"
    assert main([*training, "--out", str(folder)]) == 0
    config = (folder / "config.yaml").read_text()
    assert main([*training, "--out", str(folder), "--seed", "1", "--overwrite"]) == 0
    (folder / "config.yaml").write_text(config)  # new weights, old config: what a kill between them leaves
    with pytest.raises(PairlessError, match="does not belong to .*run the training command again"):
        read_model_folder(folder, methods=registry.names(*registry.LEARNED))


def test_a_run_into_a_folder_inside_or_around_a_locked_one_is_refused_too(tmp_path):
    model = tmp_path / "m"
    pid = _hold_in_child(model / "training")  # as ISCL and the supervised baselines train
    try:
        with pytest.raises(PairlessError, match=rf"in use by pid {pid} .*training into .*training"):
            lock.acquire(model)
    finally:
        _kill(pid)
    pid = _hold_in_child(model)
    try:
        with pytest.raises(PairlessError, match=rf"in use by pid {pid}"):
            lock.acquire(model / "training")
    finally:
        _kill(pid)
    lock.acquire(model / "training")
    lock.acquire(model)  # our own locks do not stand in each other's way
    lock.release_within(model)
    assert not lock.holds(model) and not lock.holds(model / "training")


@pytest.mark.slow
def test_a_model_being_rewritten_while_it_is_read_is_read_whole(tmp_path, training):
    """Between the rewrite of the weights and of the config, a reader waits for the pair to match."""
    import threading

    from pairless.methods import registry
    from pairless.training.modelio import read_model_folder

    folder = tmp_path / "m"
    assert main([*training, "--out", str(folder)]) == 0
    new_config = (folder / "config.yaml").read_text()
    assert main([*training, "--out", str(tmp_path / "other"), "--seed", "1"]) == 0
    (folder / "config.yaml").write_text((tmp_path / "other" / "config.yaml").read_text())  # mid-rewrite
    pid = _hold_in_child(folder)  # the writing run
    try:
        finish = threading.Timer(0.4, lambda: (folder / "config.yaml").write_text(new_config))
        finish.start()
        config, weights = read_model_folder(folder, methods=registry.names(*registry.LEARNED))
        finish.join()
    finally:
        _kill(pid)
    assert config == yaml.safe_load(new_config)


def test_the_lock_names_the_command_as_it_was_typed(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/opt/venv/bin/pairless", "fit", "n2v", "a.tif", "--out", "m"])
    assert lock._command() == "pairless fit n2v a.tif --out m"
    monkeypatch.setattr(sys, "argv", ["/src/pairless/__main__.py", "fit", "n2v", "a.tif"])
    assert lock._command() == "python -m pairless fit n2v a.tif"
