"""What pairless will never do (README): overwrite the user's files, answer bad settings with a traceback.

Every refusal is one ``error:`` line on stderr, exit code 2, with every file that was there before
unchanged, byte for byte.  The property test runs random sequences of commands over a folder of the
user's files and checks that no file that existed before a command changes unless that command said
``--overwrite``, and that an input never changes at all.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pairless.cli import main

TINY = {
    "steps": 4,
    "val_every": 2,
    "batch_size": 2,
    "patch_size": 16,
    "depth": 1,
    "filters": 4,
    "precision": "32-true",
}


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".pairless.lock" not in p.name
    }


def _refused(capsys, argv: list[str], *words: str) -> str:
    """Run ``argv``; it must fail with exit code 2 and exactly one stderr line holding ``words``."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    for word in words:
        assert word in err[0], err[0]
    return err[0]


@pytest.fixture
def user(tmp_path):
    """A folder of the user's own files: two noisy images, a reference, a mask and a settings file."""
    rng = np.random.default_rng(0)
    clean = np.clip(0.5 + 0.3 * np.sin(np.mgrid[:48, :48][1] / 5.0), 0, 1).astype(np.float32)
    for name in ("a", "b"):
        tifffile.imwrite(
            tmp_path / f"{name}.tif", (clean + rng.normal(0, 0.1, clean.shape)).astype(np.float32)
        )
    tifffile.imwrite(tmp_path / "ref.tif", clean)
    tifffile.imwrite(tmp_path / "mask.tif", (clean > 0.5).astype(np.uint8))
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    return tmp_path


@pytest.mark.parametrize("target", ["b.tif", "ref.tif", "mask.tif", "tiny.yaml"])
def test_evaluate_never_writes_its_json_over_an_input_or_an_existing_file(user, capsys, target):
    before = _hashes(user)
    argv = ["evaluate", "--reference", str(user / "ref.tif"), "--mask", str(user / "mask.tif")]
    argv += ["--images", str(user / "b.tif"), "--json", str(user / target)]
    _refused(capsys, argv, "input" if target != "tiny.yaml" else "--overwrite")
    if target != "tiny.yaml":  # an input, not even with --overwrite; another existing file only with it
        _refused(capsys, [*argv, "--overwrite"], "input")
    assert _hashes(user) == before


def test_evaluate_json_naming_a_folder_and_ssim_of_a_tiny_image_get_one_line(user, capsys):
    (user / "scores").mkdir()
    base = ["evaluate", "--reference", str(user / "ref.tif"), "--images", str(user / "a.tif")]
    _refused(capsys, [*base, "--json", str(user / "scores")], "is a folder")
    tifffile.imwrite(user / "tiny.tif", np.ones((3, 3), np.float32))
    tifffile.imwrite(user / "tiny_ref.tif", np.eye(3, dtype=np.float32))
    tiny = ["evaluate", "--reference", str(user / "tiny_ref.tif"), "--images", str(user / "tiny.tif")]
    _refused(capsys, tiny, "--metrics psnr,nrmse")
    assert main([*tiny, "--metrics", "psnr,nrmse", "--json", str(user / "tiny.json")]) == 0
    (row,) = json.loads((user / "tiny.json").read_text())["images"]
    assert {"psnr", "nrmse"} <= set(row) and not {"ssim", "si_psnr"} & set(row)


def test_denoise_replaces_an_existing_output_only_with_overwrite(user, capsys):
    out = user / "out"
    out.mkdir()
    tifffile.imwrite(out / "a.tif", np.zeros((4, 4), np.float32))  # the user's own file of that name
    before = _hashes(user)
    _refused(
        capsys, ["denoise", "median", str(user / "a.tif"), "--out", str(out), "--size", "3"], "--overwrite"
    )
    assert _hashes(user) == before
    assert (
        main(["denoise", "median", str(user / "a.tif"), "--out", str(out), "--size", "3", "--overwrite"]) == 0
    )
    assert tifffile.imread(out / "a.tif").shape == (48, 48)


@pytest.mark.slow
def test_fit_never_replaces_another_model_and_never_trains_into_the_users_folder(user, capsys):
    model = user / "model"
    fit = ["fit", "ne2ne", str(user / "a.tif"), "--config", str(user / "tiny.yaml")]
    assert main([*fit, "--out", str(model)]) == 0
    before = _hashes(user)
    _refused(capsys, [*fit, "--out", str(model)], "already holds this finished model", "--overwrite")
    _refused(capsys, [*fit, "--out", str(model), "--seed", "3"], "other data or settings")
    _refused(
        capsys,
        ["fit", "ne2ne", str(user / "b.tif"), "--config", str(user / "tiny.yaml"), "--out", str(model)],
    )
    _refused(
        capsys, ["fit", "n2v", str(user / "a.tif"), "--config", str(user / "tiny.yaml"), "--out", str(model)]
    )
    _refused(capsys, [*fit, "--out", str(model), "--seed", "3", "--resume"], "continues only the same run")
    # a folder of the user's own files, with a config.yaml of theirs, is never a model folder
    _refused(capsys, [*fit, "--out", str(user)], "not a model folder")
    _refused(capsys, [*fit, "--out", str(user), "--overwrite"], "not a model folder")
    assert _hashes(user) == before
    assert main([*fit, "--out", str(model), "--seed", "3", "--overwrite"]) == 0
    assert yaml.safe_load((model / "config.yaml").read_text())["seed"] == 3


@pytest.mark.parametrize(
    "setting, words",
    [
        ({"lr": float("inf")}, "finite"),
        ({"steps": True}, "must be a number"),
        ({"batch_size": 10**9}, "more than this machine has"),
    ],
)
def test_impossible_settings_get_one_line_and_leave_nothing(user, capsys, setting, words):
    (user / "bad.yaml").write_text(yaml.safe_dump({**TINY, **setting}))
    before = _hashes(user)
    fit = ["fit", "n2v", str(user / "a.tif"), "--config", str(user / "bad.yaml"), "--out", str(user / "m")]
    _refused(capsys, fit, words)
    assert _hashes(user) == before and not (user / "m").exists()


@pytest.mark.slow
def test_a_training_whose_loss_turns_nan_stops_in_one_line_and_writes_no_model(user, capsys):
    (user / "wild.yaml").write_text(yaml.safe_dump({**TINY, "lr": 1e30, "steps": 20}))
    fit = ["fit", "n2v", str(user / "a.tif"), "--config", str(user / "wild.yaml"), "--out", str(user / "m")]
    _refused(capsys, fit, "diverged", "lower lr")
    assert not (user / "m" / "weights.safetensors").exists()


@pytest.mark.parametrize("sigma", ["1e308", "-1"])
def test_an_absurd_sigma_gets_one_line(user, capsys, sigma):
    for method in ("gaussian", "nlm"):
        _refused(
            capsys, ["denoise", method, str(user / "a.tif"), "--out", str(user / "o"), f"--sigma={sigma}"]
        )
    assert not (user / "o").exists()


def test_a_file_name_with_a_newline_or_an_escape_stays_one_escaped_line(user, capsys):
    odd = user / "two\nlines\x1b[31m.tif"
    odd.write_bytes(b"not a tiff")
    err = _refused(capsys, ["denoise", "median", str(odd), "--out", str(user / "o")])
    assert "\\n" in err and "\\x1b" in err and "\x1b" not in err


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_fit_stops_in_one_line_and_keeps_the_checkpoint_for_resume(user, sig, code):
    (user / "long.yaml").write_text(yaml.safe_dump({**TINY, "steps": 100_000, "val_every": 2}))
    model = user / "m"
    argv = ["fit", "n2v", str(user / "a.tif"), "--config", str(user / "long.yaml"), "--out", str(model)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, "-m", "pairless", *argv], stderr=subprocess.PIPE, env=env, text=True
    )
    deadline = time.monotonic() + 120
    while not (model / "checkpoints" / "last.ckpt").exists():
        assert time.monotonic() < deadline and child.poll() is None
        time.sleep(0.1)
    child.send_signal(sig)
    _, err = child.communicate(timeout=60)
    lines = err.strip().splitlines()
    assert child.returncode == code and len(lines) == 1, err
    assert lines[0].startswith("error: stopped at step") and "--resume" in lines[0]
    assert (model / "checkpoints" / "last.ckpt").exists() and not (model / "weights.safetensors").exists()


COMMANDS = st.sampled_from(
    ["denoise", "denoise-overwrite", "evaluate", "evaluate-overwrite", "fit", "fit-overwrite"]
)


@pytest.mark.slow
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    commands=st.lists(
        st.tuples(COMMANDS, st.sampled_from(["a", "b"]), st.sampled_from(["x", "y"])), max_size=4
    )
)
def test_no_file_changes_without_overwrite_and_no_input_ever(tmp_path_factory, commands):
    """Random commands into random targets among the user's own files and earlier outputs."""
    user = tmp_path_factory.mktemp("user")
    rng = np.random.default_rng(1)
    for name in ("a", "b"):
        tifffile.imwrite(user / f"{name}.tif", rng.normal(0.5, 0.1, (32, 32)).astype(np.float32))
    (user / "tiny.yaml").write_text(yaml.safe_dump({**TINY, "steps": 2}))
    (user / "x").mkdir()
    tifffile.imwrite(
        user / "x" / "a.tif", np.zeros((5, 5), np.float32)
    )  # the user's file in an output folder
    (user / "x" / "notes.txt").write_text("mine")
    for command, image, target in commands:
        before = _hashes(user)
        overwrite = command.endswith("-overwrite")
        name = command.removesuffix("-overwrite")
        inputs = [f"{image}.tif"]
        if name == "denoise":
            argv = [
                "denoise",
                "median",
                str(user / f"{image}.tif"),
                "--out",
                str(user / target),
                "--size",
                "3",
            ]
        elif name == "evaluate":
            argv = ["evaluate", "--reference", str(user / "a.tif"), "--images", str(user / f"{image}.tif")]
            argv += ["--json", str(user / target / "scores.json")]
            inputs.append("a.tif")
        else:
            argv = ["fit", "zsn2n", str(user / f"{image}.tif"), "--config", str(user / "tiny.yaml")]
            argv += ["--out", str(user / target)]
        code = main([*argv, *(["--overwrite"] if overwrite else [])])
        after = _hashes(user)
        for path, digest in before.items():
            changed = after.get(path) != digest
            assert not (
                changed and (not overwrite or path in inputs or path in ("tiny.yaml", "x/notes.txt"))
            ), (
                command,
                path,
                code,
            )
