import csv

import numpy as np
import pytest

from pairless.cli import main


def test_simulate_pet_cli_writes_nifti_volumes_with_voxel_sizes(tmp_path, capsys):
    from pairless.io import read_image

    out = tmp_path / "sim"
    assert (
        main(["simulate", "pet", "--out", str(out), "--minutes", "2", "10", "--slices", "3", "--seed", "1"])
        == 0
    )
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "mu_per_mm.nii.gz",
        "pet_10min_kBq_per_mL.nii.gz",
        "pet_2min_kBq_per_mL.nii.gz",
        "phantom.json",
        "truth_kBq_per_mL.nii.gz",
    ]
    short = read_image(out / "pet_2min_kBq_per_mL.nii.gz")
    truth = read_image(out / "truth_kBq_per_mL.nii.gz")
    assert short.data.shape == (3, 200, 200) and short.axes == "ZYX"
    assert np.allclose(short.voxel_size, (2.027, 4.073, 4.073), atol=1e-4)
    assert truth.data.max() == pytest.approx(20.0)
    assert main(["simulate", "pet", "--out", str(out), "--minutes", "2", "ten"]) == 2
    assert "--minutes takes numbers" in capsys.readouterr().err


@pytest.mark.slow
def test_reproduce_pet_tiny_study_writes_the_report(tmp_path, capsys):
    out = tmp_path / "study"
    assert (
        main(["reproduce", "pet", "--out", str(out), "--slices", "16", "--steps", "3", "--seeds", "0", "1"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "2min+n2n" in printed and "2min+n2v" in printed and "report written to" in printed
    for name in (
        "report.html",
        "report.md",
        "results.csv",
        "recovery.csv",
        "bias.csv",
        "selection.csv",
        "images.png",
        "rc.png",
    ):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "results.csv").open()))
    keys = {(r["seed"], r["reference"], r["region"], r["method"]) for r in rows}
    for seed in ("0", "1"):
        for method in ("2min+n2n", "2min+n2n-halves", "2min+ne2ne", "2min+bsn", "2min+n2v", "2min+gaussian"):
            assert (seed, "10min", "phantom", method) in keys
        assert (seed, "truth", "phantom", "10min") in keys
    recovery = list(csv.DictReader((out / "recovery.csv").open()))
    truth = [r for r in recovery if r["image"] == "truth"]
    assert len(truth) == 12 and all(float(r["rc_max"]) == pytest.approx(1.0, abs=1e-6) for r in truth)
    selection = list(csv.DictReader((out / "selection.csv").open()))
    assert {r["method"] for r in selection} == {"n2n", "n2v", "ne2ne", "bsn"} and len(selection) == 8
    md = (out / "report.md").read_text()
    # the findings box comes first, the convention is stated once
    assert md.index("## Findings") < md.index("## Table 1") and md.count("data_range = max") == 1
    html = (out / "report.html").read_text()
    assert (
        "data:image/png;base64," in html and "EARL1" in html and "33.936" in html
    )  # the paper's numbers beside ours


def test_reproduce_pet_refuses_an_unknown_method_in_one_line(tmp_path, capsys):
    assert main(["reproduce", "pet", "--out", str(tmp_path / "x"), "--methods", "n2n,nope"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "n2n" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_simulate_pet_cli_writes_the_halves_beside_the_frames(tmp_path):
    import json

    out = tmp_path / "sim"
    assert (
        main(["simulate", "pet", "--out", str(out), "--minutes", "2", "10", "--slices", "2", "--splits", "2"])
        == 0
    )
    names = {p.name for p in out.iterdir()}
    assert {
        "pet_2min_part1_kBq_per_mL.nii.gz",
        "pet_2min_part2_kBq_per_mL.nii.gz",
        "pet_10min_part1_kBq_per_mL.nii.gz",
        "pet_2min_kBq_per_mL.nii.gz",
    } <= names
    assert json.loads((out / "phantom.json").read_text())["parts_per_frame"] == 2
