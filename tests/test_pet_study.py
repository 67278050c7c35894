import csv

import numpy as np
import pytest

from pairless.cli import main


def test_simulate_pet_cli_writes_nifti_volumes_with_voxel_sizes(tmp_path, capsys):
    from pairless.io import read_image

    out = tmp_path / "sim"
    assert main(["simulate", "pet", "--out", str(out), "--minutes", "2", "10", "--slices", "3", "--seed", "1"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["mu_per_mm.nii.gz", "pet_10min_kBq_per_mL.nii.gz", "pet_2min_kBq_per_mL.nii.gz", "phantom.json",
                     "truth_kBq_per_mL.nii.gz"]
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
    assert main(["reproduce", "pet", "--out", str(out), "--slices", "5", "--n2v-steps", "3"]) == 0
    printed = capsys.readouterr().out
    assert "2min+n2v" in printed and "report written to" in printed
    for name in ("report.html", "report.md", "results.csv", "recovery.csv", "images.png", "rc.png"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "results.csv").open()))
    methods = {(r["reference"], r["region"], r["method"]) for r in rows}
    assert ("10min", "phantom", "2min+n2v") in methods and ("truth", "phantom", "10min") in methods
    assert all(r["convention"] and float(r["data_range"]) > 0 for r in rows)
    recovery = list(csv.DictReader((out / "recovery.csv").open()))
    truth = [r for r in recovery if r["image"] == "truth"]
    assert len(truth) == 6 and all(float(r["rc_max"]) == pytest.approx(1.0, abs=1e-6) for r in truth)
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "EARL1" in html and "33.936" in html  # the paper's numbers beside ours
