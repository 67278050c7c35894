"""Many inputs: every one checked from its header first, then denoised (or scored) one at a time.

Memory does not grow with the number of inputs (numpy allocations traced), a bad file among many
is refused before any pixel is read, a failure late in a run leaves nothing written (or, with
``--keep-going``, the finished outputs and the names of the others), and the header check agrees
with a full read for every format.
"""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile

from pairless import io
from pairless.cli import main
from pairless.errors import PairlessError
from pairless.inference.stream import STAGING_PREFIX, denoise_files
from pairless.io import Image, inspect_image, read_image, write_image
from pairless.methods.classical import make_classical


def _frames(folder: Path, count: int, shape=(64, 64), seed=0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"f{i:03d}.tif"
        tifffile.imwrite(path, rng.normal(100, 10, shape).astype(np.float32))
        paths.append(path)
    return paths


def _count_reads(monkeypatch) -> list[Path]:
    reads: list[Path] = []
    real = io.read_image

    def counting(path, **kwargs):
        reads.append(Path(path))
        return real(path, **kwargs)

    monkeypatch.setattr(io, "read_image", counting)
    return reads


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize(
    "make_bad, words",
    [
        (lambda p: p.write_text("not an image"), "cannot be read as TIFF"),
        (lambda p: np.save(p.with_suffix(".npy"), np.zeros((0, 4), np.float32)), "empty"),
        (lambda p: np.save(p.with_suffix(".npy"), np.zeros((4, 4), np.complex64)), "complex64"),
        (
            lambda p: np.save(p.with_suffix(".npy"), np.zeros((2, 2, 2, 4, 4), np.float32)),
            "cannot tell the axes",
        ),
        (lambda p: p.with_suffix(".npy").write_bytes(_truncated_npy()), "complete"),
    ],
)
def test_a_bad_file_last_among_many_is_refused_before_any_pixel_is_read(
    tmp_path, monkeypatch, capsys, make_bad, words
):
    paths = _frames(tmp_path / "in", 6)
    bad = tmp_path / "in" / "zz.tif"
    make_bad(bad)
    bad = bad if bad.exists() else bad.with_suffix(".npy")
    reads = _count_reads(monkeypatch)
    out = tmp_path / "out"
    assert main(["denoise", "gaussian", *map(str, paths), str(bad), "--sigma", "1", "--out", str(out)]) == 2
    line = _one_error(capsys)
    assert bad.name in line and words in line, line
    assert reads == [] and not out.exists()


def _truncated_npy() -> bytes:
    import io as _io

    buffer = _io.BytesIO()
    np.save(buffer, np.ones((32, 32), np.float32))
    return buffer.getvalue()[:-100]


def test_a_model_that_cannot_work_on_an_input_is_refused_up_front(tmp_path, monkeypatch, capsys):
    from pairless.denoiser import Denoiser

    class ThreeD(Denoiser):
        spatial_ndim = 3

        def forward(self, y, sigma=None):
            return y

    paths = _frames(tmp_path / "in", 3)
    reads = _count_reads(monkeypatch)
    with pytest.raises(PairlessError, match=r"f000\.tif: this denoiser works on 3D images"):
        denoise_files(paths, tmp_path / "out", ThreeD(), echo=lambda line: None)
    assert reads == [] and not (tmp_path / "out").exists()


def test_a_failure_only_the_pixels_show_leaves_nothing_written(tmp_path, capsys):
    paths = _frames(tmp_path / "in", 4)
    nan = np.ones((64, 64), np.float32)
    nan[5, 5] = np.nan
    tifffile.imwrite(paths[2], nan)
    out = tmp_path / "out"
    assert main(["denoise", "gaussian", *map(str, paths), "--sigma", "1", "--out", str(out)]) == 2
    line = _one_error(capsys)
    assert "f002.tif" in line and "NaN" in line and "nothing was written" in line and "--keep-going" in line
    assert not out.exists()

    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    assert main(["denoise", "gaussian", *map(str, paths), "--sigma", "1", "--out", str(existing)]) == 2
    capsys.readouterr()
    assert [p.name for p in existing.iterdir()] == [
        "notes.txt"
    ]  # an existing folder keeps only its own files


def test_keep_going_keeps_the_others_and_names_exactly_those_not_done(tmp_path, capsys):
    paths = _frames(tmp_path / "in", 5)
    for i in (1, 3):
        nan = np.ones((64, 64), np.float32)
        nan[0, i] = np.inf
        tifffile.imwrite(paths[i], nan)
    out = tmp_path / "out"
    assert (
        main(["denoise", "gaussian", *map(str, paths), "--sigma", "1", "--out", str(out), "--keep-going"])
        == 2
    )
    line = _one_error(capsys)
    assert line.startswith("error: 2 of 5 inputs were not denoised: ")
    assert f"{paths[1]} (" in line and f"{paths[3]} (" in line and "the other 3 are in" in line
    assert "f000" not in line and "f002" not in line and "f004" not in line
    assert sorted(p.name for p in out.iterdir()) == ["f000.tif", "f002.tif", "f004.tif"]
    assert main(["denoise", "gaussian", str(paths[2]), "--sigma", "1", "--out", str(tmp_path / "one")]) == 0
    assert (out / "f002.tif").read_bytes() == (tmp_path / "one" / "f002.tif").read_bytes()


def _peak_traced(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_number_of_inputs(tmp_path):
    """Traced numpy/python allocations peak the same for 4 and 24 inputs (the old code held them all)."""
    denoiser = make_classical("gaussian", sigma=1.0)
    few = _frames(tmp_path / "few", 4, shape=(128, 128))
    many = _frames(tmp_path / "many", 24, shape=(128, 128), seed=1)
    denoise_files(few[:1], tmp_path / "warm", denoiser, echo=lambda line: None)  # imports, caches
    peaks = [
        _peak_traced(
            lambda: denoise_files(paths, tmp_path / f"out{len(paths)}", denoiser, echo=lambda line: None)
        )
        for paths in (few, many)
    ]
    image = 128 * 128 * 4
    assert peaks[1] < peaks[0] * 1.3 + image, peaks
    assert peaks[1] < 24 * image, peaks  # far below holding all the inputs


def test_evaluate_checks_every_image_first_then_scores_one_at_a_time(tmp_path, monkeypatch, capsys):
    paths = _frames(tmp_path / "in", 5, shape=(32, 32))
    small = tmp_path / "in" / "small.tif"
    tifffile.imwrite(small, np.ones((16, 16), np.float32))
    reads = _count_reads(monkeypatch)
    argv = ["evaluate", "--reference", str(paths[0]), "--images", *map(str, paths[1:]), str(small)]
    assert main(argv) == 2
    assert "small.tif" in _one_error(capsys) and reads == [paths[0]]  # only the reference was read

    from pairless.metrics.evaluate import evaluate_images

    reads.clear()
    many = _frames(tmp_path / "many", 20, shape=(96, 96), seed=2)
    evaluate_images(many[:2], reference=many[0], data_range=50)  # warm up
    peaks = [
        _peak_traced(lambda: evaluate_images(group, reference=many[0], data_range=50))
        for group in (many[:3], many)
    ]
    assert peaks[1] < peaks[0] * 1.3 + 96 * 96 * 4, peaks
    results = evaluate_images(many, reference=many[0], data_range=50, progress=True)
    assert [r["image"] for r in results] == list(map(str, many)) and results[0]["psnr"] == float("inf")


def test_a_killed_runs_staging_folder_is_removed_and_a_live_ones_is_kept(tmp_path):
    import socket

    from pairless.io.processes import start_ticks

    paths = _frames(tmp_path / "in", 2)
    out = tmp_path / "out"
    out.mkdir()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)  # a finished (dead) process
    host = socket.gethostname()
    dead = out / f"{STAGING_PREFIX}{host}-{pid}-{12345}-abc.part"
    live = out / f"{STAGING_PREFIX}{host}-{os.getppid()}-{start_ticks(os.getppid())}-abc.part"
    other_host = out / f"{STAGING_PREFIX}elsewhere-{pid}-1-abc.part"
    for folder in (dead, live, other_host):
        folder.mkdir()
        (folder / "f000.tif").write_bytes(b"partial")
    denoise_files(paths, out, make_classical("gaussian", sigma=1.0), echo=lambda line: None)
    assert not dead.exists() and live.exists() and other_host.exists()
    assert read_image(out / "f000.tif").data.shape == (64, 64)


def test_outputs_go_into_an_existing_folder_and_replace_earlier_results_with_overwrite(tmp_path, capsys):
    paths = _frames(tmp_path / "in", 2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    (out / "f000.tif").write_bytes(b"an older result")
    argv = ["denoise", "gaussian", *map(str, paths), "--sigma", "1", "--out", str(out)]
    assert main(argv) == 2  # an earlier result is replaced only when the user says so
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert (out / "f000.tif").read_bytes() == b"an older result" and not (out / "f001.tif").exists()
    assert main([*argv, "--overwrite"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [f"{p} -> {out / p.name}" for p in paths]
    assert sorted(p.name for p in out.iterdir()) == ["f000.tif", "f001.tif", "keep.txt"]
    assert read_image(out / "f000.tif").data.shape == (64, 64)


def test_a_progress_bar_over_files_does_not_disturb_the_results(tmp_path):
    paths = _frames(tmp_path / "in", 3)
    written = denoise_files(
        paths, tmp_path / "out", make_classical("median", size=3), progress=True, echo=lambda line: None
    )
    assert [p.name for p in written] == [p.name for p in paths]


# ---------------------------------------------------------------- header checks agree with full reads


def _write_dicom_series(folder: Path) -> Path:
    write_image(folder / "series.dcm", Image(np.arange(3 * 8 * 9, dtype=np.float32).reshape(3, 8, 9), "ZYX"))
    return folder / "series.dcm"


@pytest.mark.parametrize(
    "name, array, axes, stored",
    [
        ("a.tif", np.ones((3, 8, 9), np.uint16), "ZYX", None),
        ("b.tif", np.ones((8, 9, 3), np.uint8), None, "YXC"),
        ("c.png", np.ones((8, 9), np.uint8), "YX", None),
        ("d.png", np.ones((3, 8, 9), np.uint8), "CYX", None),
        ("e.npy", np.ones((2, 3, 8, 9), np.float64), "SZYX", None),
        ("f.nii.gz", np.ones((3, 8, 9), np.int16), "ZYX", None),
        ("g.nii", np.ones((2, 3, 8, 9), np.float32), "TZYX", None),
        ("dicom", None, None, None),
    ],
)
def test_the_header_check_agrees_with_a_full_read(tmp_path, name, array, axes, stored):
    if name == "dicom":
        path = _write_dicom_series(tmp_path)
    elif stored == "YXC":
        path = tmp_path / name
        tifffile.imwrite(path, array, photometric="rgb")
    else:
        path = tmp_path / name
        write_image(path, Image(array, axes), dtype=None)
    info, image = inspect_image(path), read_image(path)
    assert (info.shape, info.dtype, info.axes) == (image.data.shape, image.data.dtype, image.axes)


def test_the_header_check_applies_an_axes_override_like_a_full_read(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.ones((8, 9, 3), np.float32))
    info, image = inspect_image(path, axes="YXC"), read_image(path, axes="YXC")
    assert (info.shape, info.axes) == (image.data.shape, image.axes) == ((3, 8, 9), "CYX")
    with pytest.raises(PairlessError, match="axes 'ZYXC' has 4 letters"):
        inspect_image(tmp_path / "a.npy", axes="ZYXC")
    write_image(tmp_path / "v.nii.gz", Image(np.ones((3, 8, 9), np.float32), "ZYX"))
    with pytest.raises(PairlessError, match="set by the format"):
        inspect_image(tmp_path / "v.nii.gz", axes="SYX")


def test_same_named_inputs_from_two_folders_are_refused_before_anything(tmp_path, monkeypatch, capsys):
    first = _frames(tmp_path / "a", 2)
    second = _frames(tmp_path / "b", 1, seed=1)
    reads = _count_reads(monkeypatch)
    out = tmp_path / "out"
    assert main(["denoise", "gaussian", *map(str, first + second), "--sigma", "1", "--out", str(out)]) == 2
    line = _one_error(capsys)
    assert "several inputs are named 'f000.tif'" in line and reads == [] and not out.exists()
