"""Full disks and unwritable targets at every place pairless writes, and the permissions of what it writes.

ENOSPC and EACCES are injected at each write site (checkpoints, the model folder's files, the
training log, image outputs, the evaluation report, the lock): the command stops with exit 2 and
one ``error:`` line naming the path (and, for a full disk, the space needed), what was there
before is intact, and the same command completes once the fault is gone.  Real small tmpfs
mounts (where this machine lets us mount one) fill up for real during training, out-of-core
denoising and denoising.  Every file and folder in a model folder and in output folders gets
the umask's ordinary permissions.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml

from pairless.cli import main
from pairless.io.files import WriteError

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN = dict(
    patch_size=32, batch_size=4, filters=8, precision="32-true", mask_fraction=0.01, steps=8, val_every=4
)


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


@pytest.fixture
def inject(monkeypatch):
    """``inject(code, select, after=0)``: os.open/os.write/os.replace on a selected path fail with ``code``.

    The first ``after`` selected calls succeed.  Returns a dict whose ``"hits"`` counts the failures.
    """
    state = {"hits": 0}

    def arm(code: int, select, *, after: int = 0):
        seen = {"n": 0}
        real_open, real_write, real_replace = os.open, os.write, os.replace

        def fail(path: str) -> bool:
            if not select(path):
                return False
            seen["n"] += 1
            if seen["n"] > after:
                state["hits"] += 1
                return True
            return False

        def _open(path, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and fail(os.fspath(path)):
                raise OSError(code, os.strerror(code), os.fspath(path))
            return real_open(path, flags, *args, **kwargs)

        def _write(fd, data):
            if fail(_fd_path(fd)):
                raise OSError(code, os.strerror(code))
            return real_write(fd, data)

        def _replace(src, dst, *args, **kwargs):
            if fail(os.fspath(dst)):
                raise OSError(code, os.strerror(code), os.fspath(dst))
            return real_replace(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "open", _open)
        monkeypatch.setattr(os, "write", _write)
        monkeypatch.setattr(os, "replace", _replace)
        return state

    def disarm():
        monkeypatch.undo()

    arm.disarm = disarm
    return arm


def _one_error_line(capsys, *words: str) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in captured.err + captured.out, captured.err
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]


@pytest.fixture
def train_args(tmp_path):
    np.save(tmp_path / "img.npy", np.random.default_rng(0).normal(0, 1, (64, 64)).astype(np.float32))
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(TRAIN))
    return ["fit", "n2v", str(tmp_path / "img.npy"), "--config", str(tmp_path / "cfg.yaml"), "--out"]


def _step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


# ---------------------------------------------------------------- training


@pytest.mark.slow
def test_a_full_disk_at_a_checkpoint_keeps_the_last_one_and_the_same_command_resumes(
    tmp_path, train_args, inject, capsys
):
    assert main([*train_args, str(tmp_path / "ref")]) == 0
    folder = tmp_path / "m"
    # each checkpoint write makes 4 such calls (create, open, write, rename): fail the second one's write
    inject(errno.ENOSPC, lambda p: "/m/checkpoints/" in p and "last.ckpt" in p, after=6)
    assert main([*train_args, str(folder)]) == 2
    line = _one_error_line(capsys, "last.ckpt", "no space left", "it needs", "kB", "intact", "same command")
    assert "RuntimeError" not in line
    inject.disarm()
    assert _step(folder / "checkpoints" / "last.ckpt") == 4  # the one before, whole
    assert not (folder / ".pairless.lock").exists()
    assert main([*train_args, str(folder)]) == 0  # space freed: the same command finishes the run
    assert _step(folder / "checkpoints" / "last.ckpt") == 8
    assert (folder / "weights.safetensors").read_bytes() == (
        tmp_path / "ref" / "weights.safetensors"
    ).read_bytes()


@pytest.mark.parametrize(
    "code, target, words",
    [
        (errno.EACCES, "checkpoints/best.ckpt", ("best.ckpt", "permission denied")),
        (errno.ENOSPC, "/m/weights.safetensors", ("weights.safetensors", "no space left", "it needs")),
        (errno.EACCES, "/m/.config.yaml", ("config.yaml", "permission denied")),
        (errno.ENOSPC, "/m/.training_log.csv", ("training_log.csv", "no space left")),
        (errno.EROFS, "/m/.loss.png", ("loss.png", "read-only")),
        (errno.EACCES, "/m/.pairless.lock", (".pairless.lock", "permission denied")),
    ],
)
def test_each_training_write_site_fails_in_one_line_and_leaves_whole_files(
    tmp_path, train_args, inject, capsys, code, target, words
):
    folder = tmp_path / "m"
    state = inject(code, lambda p: target in p)
    assert main([*train_args, str(folder)]) == 2
    assert state["hits"] == 1
    _one_error_line(capsys, *words)
    inject.disarm()
    for checkpoint in (folder / "checkpoints").glob("*.ckpt"):
        _step(checkpoint)  # whatever was written is whole
    assert not list(folder.rglob(".*.part*")) and not (folder / ".pairless.lock").exists()


# ---------------------------------------------------------------- outputs and reports


@pytest.fixture
def frames(tmp_path):
    rng = np.random.default_rng(2)
    paths = []
    for i in range(4):
        tifffile.imwrite(tmp_path / f"frame{i}.tif", rng.normal(100, 10, (32, 40)).astype(np.float32))
        paths.append(str(tmp_path / f"frame{i}.tif"))
    return paths


def test_a_full_disk_while_denoising_writes_nothing_and_names_the_file_and_size(
    tmp_path, frames, inject, capsys
):
    out = tmp_path / "out"
    inject(errno.ENOSPC, lambda p: "frame2.tif" in p and "/out/" in p)
    assert main(["denoise", "gaussian", *frames, "--sigma", "1", "--out", str(out)]) == 2
    line = _one_error_line(
        capsys, f"cannot write {out / 'frame2.tif'}: no space left", "it needs 5.1 kB", "same command"
    )
    assert ".pairless-denoise" not in line and not out.exists()
    inject.disarm()
    assert main(["denoise", "gaussian", *frames, "--sigma", "1", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"frame{i}.tif" for i in range(4)]


def test_keep_going_keeps_the_finished_outputs_and_names_those_not_done(tmp_path, frames, inject, capsys):
    out = tmp_path / "out"
    inject(errno.ENOSPC, lambda p: "frame2.tif" in p and "/out/" in p)
    assert main(["denoise", "gaussian", *frames, "--sigma", "1", "--out", str(out), "--keep-going"]) == 2
    line = _one_error_line(
        capsys,
        "2 of 4 inputs were not denoised",
        "frame2.tif",
        "frame3.tif",
        "not started",
        "the other 2 are in",
    )
    assert "frame0.tif (" not in line
    assert sorted(p.name for p in out.iterdir()) == ["frame0.tif", "frame1.tif"]
    reference = tmp_path / "ref"
    inject.disarm()
    assert main(["denoise", "gaussian", *frames[:2], "--sigma", "1", "--out", str(reference)]) == 0
    for name in ("frame0.tif", "frame1.tif"):
        assert (out / name).read_bytes() == (reference / name).read_bytes()


def test_an_unwritable_output_folder_fails_before_any_work(tmp_path, frames, inject, capsys):
    out = tmp_path / "out"
    inject(errno.EACCES, lambda p: "/out" in p)
    assert main(["denoise", "gaussian", *frames, "--sigma", "1", "--out", str(out / "sub")]) == 2
    _one_error_line(capsys, "permission denied", "/out")


@pytest.mark.parametrize(
    "code, words",
    [
        (errno.EACCES, ("scores.json", "permission denied")),
        (errno.ENOSPC, ("scores.json", "no space left", "it needs")),
    ],
)
def test_the_evaluation_report_write_fails_in_one_line(tmp_path, frames, inject, capsys, code, words):
    inject(code, lambda p: "scores.json" in p)
    argv = [
        "evaluate",
        "--reference",
        frames[0],
        "--images",
        *frames[1:],
        "--json",
        str(tmp_path / "scores.json"),
    ]
    assert main(argv) == 2
    _one_error_line(capsys, *words)
    assert not (tmp_path / "scores.json").exists() and not list(tmp_path.glob(".scores.json*"))


# ---------------------------------------------------------------- real full disks


@pytest.fixture
def small_disk(tmp_path):
    """``resize(size)`` a real tmpfs mounted at ``tmp_path/disk`` (skipped where mounting is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()

    def resize(size: str) -> Path:
        options = f"size={size}" if not os.path.ismount(mount) else f"remount,size={size}"
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True, text=True
        )
        if result.returncode != 0:
            pytest.skip(
                f"cannot mount a small tmpfs here ({result.stderr.strip() or 'mount failed'}); needs root"
            )
        return mount

    yield resize
    if os.path.ismount(mount):
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_training_on_a_really_full_disk_stops_in_one_line_and_resumes_when_space_is_freed(
    tmp_path, train_args, small_disk, capsys
):
    disk = small_disk("500k")  # room for one checkpoint (~310 kB) but not two
    folder = disk / "m"
    assert main([*train_args, str(folder)]) == 2
    _one_error_line(capsys, "no space left on", str(disk), "it needs", "are free")
    kept = {p.name: _step(p) for p in (folder / "checkpoints").glob("*.ckpt")}
    assert kept == {"best.ckpt": 4}
    small_disk("4m")  # space freed
    assert main([*train_args, str(folder)]) == 0
    assert _step(folder / "checkpoints" / "last.ckpt") == 8 and (folder / "weights.safetensors").is_file()
    assert "step,train_loss" in (folder / "training_log.csv").read_text().replace('"', "")


def test_out_of_core_denoising_on_a_really_full_disk_leaves_nothing(tmp_path, small_disk):
    import zarr

    from pairless.inference.chunked import denoise_chunked
    from pairless.methods.classical import make_classical

    source = tmp_path / "vol.zarr"
    zarr.create_array(store=str(source), shape=(16, 64, 64), chunks=(8, 32, 32), dtype="float32")[:] = 1.0
    disk = small_disk("64k")
    with pytest.raises(WriteError, match=r"vol\.zarr: no space left on .*it needs 262\.1 kB"):
        denoise_chunked(
            source, disk / "vol.zarr", make_classical("gaussian", sigma=1.0), axes="ZYX", block=16, halo=4
        )
    assert list(disk.iterdir()) == []


def test_denoising_more_than_fits_is_refused_up_front(tmp_path, frames, small_disk, capsys):
    disk = small_disk("12k")
    assert main(["denoise", "gaussian", *frames, "--sigma", "1", "--out", str(disk / "out")]) == 2
    _one_error_line(capsys, "need about 20.5 kB", "are free", "nothing was written")
    assert list(disk.iterdir()) == []


# ---------------------------------------------------------------- permissions


@pytest.fixture
def group_umask():
    old = os.umask(0o002)
    yield 0o002
    os.umask(old)


def _modes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode) for p in [folder, *folder.rglob("*")]}


def test_every_file_written_honours_the_umask(tmp_path, train_args, frames, group_umask):
    import zarr

    folder = tmp_path / "model"
    assert main([*train_args, str(folder)]) == 0
    modes = _modes(folder)
    assert {
        "weights.safetensors",
        "config.yaml",
        "training_log.csv",
        "loss.png",
        "checkpoints/last.ckpt",
    } <= set(modes)
    wrong = {
        name: oct(mode)
        for name, mode in modes.items()
        if mode != (0o775 if (folder / name).is_dir() else 0o664)
    }
    assert not wrong, wrong

    np.save(tmp_path / "vol.npy", np.ones((3, 16, 16), np.float32))
    zarr.create_array(store=str(tmp_path / "vol.zarr"), shape=(4, 16, 16), chunks=(2, 8, 8), dtype="float32")[
        :
    ] = 1.0
    out = tmp_path / "out"
    assert main(["denoise", "gaussian", *frames, "--sigma", "1", "--out", str(out)]) == 0
    assert (
        main(
            [
                "denoise",
                "gaussian",
                str(tmp_path / "vol.npy"),
                str(tmp_path / "vol.zarr"),
                "--sigma",
                "1",
                "--axes",
                "ZYX",
                "--block",
                "8",
                "--halo",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    from pairless.io import read_image, write_image

    write_image(out / "series.dcm", read_image(tmp_path / "vol.npy"))  # a DICOM folder output
    modes = _modes(out)
    assert {"frame0.tif", "vol.npy", "vol.zarr/zarr.json", "series.dcm/0001.dcm"} <= set(modes)
    wrong = {
        name: oct(mode) for name, mode in modes.items() if mode != (0o775 if (out / name).is_dir() else 0o664)
    }
    assert not wrong, wrong
    (tmp_path / "unused").write_text(uuid.uuid4().hex)  # the umask is really 002 here
    assert stat.S_IMODE((tmp_path / "unused").stat().st_mode) == 0o664
