"""The EM study end to end on a tiny subset, its rank comparison, and `simulate em`."""

import csv

import numpy as np
import pytest
from PIL import Image

from pairless.config import SupervisedConfig
from pairless.errors import PairlessError
from pairless.experiments.em import PAPER_TABLE2, Method, rank_agreement, reproduce_em, simulate_em_folder


def _slices(folder, n=6, shape=(64, 64)):
    from scipy import ndimage

    rng = np.random.default_rng(0)
    folder.mkdir()
    for i in range(n):
        field = ndimage.gaussian_filter(rng.random(shape), 2)
        field = (field - field.min()) / (field.max() - field.min())
        Image.fromarray((40 + 180 * field).astype(np.uint8)).save(folder / f"{i}.png")
    return folder


def _tiny_dncnn(data, *, out, profile, seed, progress):
    from pairless.methods.supervised import fit_supervised

    config = SupervisedConfig(channels=8, depth=4, patch_size=24, batch_size=4, steps=4, val_every=2, val_batches=1)
    return fit_supervised(data.noisy, data.noisy_truth, arch="dncnn", out=out, config=config, seed=seed, progress=False)


def test_tiny_study_writes_a_report_with_every_row(tmp_path):
    clean = _slices(tmp_path / "clean")
    out = tmp_path / "report"
    html = reproduce_em(out, clean=clean, methods=["noisy", "median", Method("dncnn", _tiny_dncnn, "DnCNN tiny")],
                        progress=False)
    assert html.is_file() and (out / "report.md").is_file()
    assert {"em_noise.png", "panels_charge.png", "panels_film.png", "results.csv", "folds.csv"} <= {
        p.name for p in out.iterdir()}
    rows = {r["method"]: r for r in csv.DictReader((out / "folds.csv").open())}  # last fold/noise per method
    assert set(rows) == {"noisy", "median", "dncnn"}
    folds = list(csv.DictReader((out / "folds.csv").open()))
    assert len(folds) == 3 * 2  # quick profile: one fold, two noise types
    by = {(r["method"], r["noise"]): float(r["psnr"]) for r in folds}
    for noise in ("charge", "film"):
        assert 12 < by[("noisy", noise)] < 28
        assert by[("median", noise)] > by[("noisy", noise)]  # a filter beats the raw noise
    assert (out / "models" / "charge" / "fold0" / "dncnn" / "config.yaml").is_file()
    text = (out / "report.md").read_text()
    assert "data range 1.0" in text and "7×7" in text and "Ordering vs. the paper" in text
    assert "28.27" in text  # the paper's DnCNN number beside ours


def test_rank_agreement_is_spearman_against_table_2():
    cols = ("charge_psnr", "charge_ssim", "film_psnr", "film_ssim")
    rows = [{**{c: v for c, v in zip(cols, vals)}, **{f"paper_{c}": v for c, v in zip(cols, vals)}}
            for vals in PAPER_TABLE2.values()]
    assert all(rho == pytest.approx(1.0) for rho, n in rank_agreement(rows).values())
    flipped = [{**r, "film_psnr": -r["film_psnr"]} for r in rows]
    rho, n = rank_agreement(flipped)["film_psnr"]
    assert rho < -0.9 and n == len(PAPER_TABLE2)


def test_missing_clean_folder_says_how_to_fix(tmp_path):
    with pytest.raises(PairlessError, match="--clean DIR"):
        reproduce_em(tmp_path / "out", clean=tmp_path / "nowhere", methods=["noisy"], progress=False)
    with pytest.raises(PairlessError, match="folds"):
        reproduce_em(tmp_path / "out", clean=_slices(tmp_path / "few", n=3), methods=["noisy"], progress=False)


def test_simulate_folder_keeps_names_and_dtype_and_is_seeded(tmp_path):
    clean = _slices(tmp_path / "clean", n=2)
    a = simulate_em_folder(clean, kind="film", out=tmp_path / "a", seed=3)
    simulate_em_folder(clean, kind="film", out=tmp_path / "b", seed=3)
    assert sorted(p.name for p in a) == ["0.png", "1.png"]
    assert (tmp_path / "a" / "em_noise.png").is_file()
    x, y = np.array(Image.open(tmp_path / "a" / "1.png")), np.array(Image.open(tmp_path / "b" / "1.png"))
    assert x.dtype == np.uint8 and x.shape == (64, 64)
    np.testing.assert_array_equal(x, y)
    assert np.abs(x.astype(float) - np.array(Image.open(clean / "1.png"))).mean() > 3


def test_simulate_em_cli(tmp_path, capsys):
    from pairless.cli import main

    clean = _slices(tmp_path / "clean", n=2)
    assert main(["simulate", "em", "--clean", str(clean), "--noise", "charge", "--out", str(tmp_path / "n")]) == 0
    assert (tmp_path / "n" / "0.png").is_file()
    assert main(["simulate", "em", "--clean", str(clean), "--noise", "salt", "--out", str(tmp_path / "m")]) == 2
    assert "unknown EM noise" in capsys.readouterr().err and not (tmp_path / "m").exists()


def test_noise_level_on_isbi_slices(shared_data):
    from skimage.metrics import peak_signal_noise_ratio

    from pairless.experiments.em import read_clean_folder
    from pairless.sim.em import em_noise

    folder = shared_data / "em" / "isbi2012" / "train_image"
    if not folder.is_dir():
        pytest.skip("ISBI 2012 slices not in the shared data")
    slices = [im for _, im in read_clean_folder(folder)[:3]]
    for kind in ("charge", "film"):
        level = np.mean([peak_signal_noise_ratio(y, em_noise(y, kind=kind, rng=i), data_range=1.0)
                         for i, y in enumerate(slices)])
        assert 18.5 < level < 21.5, (kind, level)


def test_reproduce_em_cli_reports_a_missing_folder(tmp_path, capsys):
    from pairless.cli import main

    code = main(["reproduce", "em", "--out", str(tmp_path / "r"), "--clean", str(tmp_path / "nowhere"),
                 "--methods", "noisy,median"])
    assert code == 2 and "--clean DIR" in capsys.readouterr().err
    assert main(["reproduce", "em", "--out", str(tmp_path / "r"), "--methods", "noisy,unet"]) == 2
    assert "unknown EM study method 'unet'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
