"""The EM study end to end on a tiny subset, reuse of scored rows, its statistics on known cases, and
`simulate em`."""

import csv

import numpy as np
import pytest
from PIL import Image

from pairless.errors import PairlessError
from pairless.experiments.em import (
    PAPER_TABLE2,
    Method,
    claim_checks,
    method,
    preset_tests,
    rank_agreement,
    reproduce_em,
    run_em_study,
)
from pairless.experiments.stats import holm, paired_test, spearman
from pairless.methods.supervised import SupervisedConfig
from pairless.sim.em_folder import simulate_em_folder


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
    from pairless import api

    config = SupervisedConfig(
        channels=8, depth=4, patch_size=24, batch_size=4, steps=4, val_every=2, val_batches=1
    )
    return api.fit(
        "supervised",
        data.noisy,
        clean=data.noisy_truth,
        arch="dncnn",
        out=out,
        config=config,
        seed=seed,
        overwrite=True,  # as the study's own methods: each run trains its model folders again
        progress=False,
    )


@pytest.mark.slow
def test_tiny_study_writes_a_report_with_every_row(tmp_path):
    clean = _slices(tmp_path / "clean")
    out = tmp_path / "report"

    # stand-ins under two preset names, so that the preset test table is written too
    stand_ins = [
        Method("iscl-optimized", method("median").fit, "median as optimized"),
        Method("iscl-bin", method("noisy").fit, "input as BIN"),
    ]
    html = reproduce_em(
        out,
        clean=clean,
        methods=["noisy", "median", "wiener", Method("dncnn", _tiny_dncnn, "DnCNN tiny"), *stand_ins],
        progress=False,
    )
    assert html.is_file() and (out / "report.md").is_file()
    assert {
        "em_noise.png",
        "panels_charge.png",
        "panels_film.png",
        "results.csv",
        "folds.csv",
        "images.csv",
    } <= {p.name for p in out.iterdir()}
    folds = list(csv.DictReader((out / "folds.csv").open()))
    assert {r["method"] for r in folds} == {
        "noisy",
        "median",
        "wiener",
        "dncnn",
        "iscl-optimized",
        "iscl-bin",
    }
    assert len(folds) == 6 * 2 * 3  # quick profile: three folds, two noise types
    assert {int(r["fold"]) for r in folds} == {0, 1, 2}
    images = list(csv.DictReader((out / "images.csv").open()))
    assert len(images) == 6 * 2 * 6  # every slice is a test slice exactly once per method and noise
    tests = {r["noise"]: r for r in csv.DictReader((out / "preset_tests.csv").open())}
    assert set(tests) == {"charge", "film"} and all(int(t["n"]) == 6 for t in tests.values())
    assert all(float(t["mean_diff"]) < 0 for t in tests.values())  # the input is worse than the median filter
    for noise in ("charge", "film"):
        by = [
            {(r["method"]): float(r["psnr"]) for r in folds if r["noise"] == noise and r["fold"] == str(k)}
            for k in range(3)
        ]
        for fold in by:
            assert 12 < fold["noisy"] < 28
            assert fold["median"] > fold["noisy"]  # a filter beats the raw noise
            assert fold["wiener"] > fold["noisy"] + 1  # the least-squares filter, fitted on 2 pairs
    results = {
        r["method"]: r for r in csv.DictReader((out / "results.csv").open())
    }  # the full-precision rows
    assert set(results) == {"noisy", "median", "wiener", "dncnn", "iscl-optimized", "iscl-bin"}
    assert float(results["median"]["charge_psnr_sd"]) > 0  # sd over three folds
    assert (out / "models" / "charge" / "fold2" / "dncnn" / "model" / "config.yaml").is_file()
    text = (out / "report.md").read_text()
    assert "data range 1.0" in text and "7×7" in text and "Ordering vs. the paper" in text
    assert "28.27" in text  # the paper's DnCNN number beside ours
    assert "linear-filter ceiling" in text and "additive" in text


def _counted_dncnn(calls: list):
    """The tiny DnCNN fit, recording each call's noise type in ``calls``."""

    def counted(data, **kwargs):
        calls.append(data.noise)
        return _tiny_dncnn(data, **kwargs)

    return counted


@pytest.mark.slow
def test_reuse_reads_back_rows_scored_with_the_same_data_only(tmp_path):
    from pairless.sim.em_folder import read_clean_folder

    images = [im for _, im in read_clean_folder(_slices(tmp_path / "clean"))]
    calls = []
    counted = _counted_dncnn(calls)
    methods = [Method("dncnn", counted, "DnCNN tiny")]
    first = run_em_study(images, methods=methods, out=tmp_path / "s", reuse=True, progress=False)
    assert len(calls) == 6 and not first.reused
    again = run_em_study(images, methods=methods, out=tmp_path / "s", reuse=True, progress=False)
    assert len(calls) == 6 and len(again.reused) == 6  # nothing trained again
    assert again.image_rows == first.image_rows and again.fold_rows == first.fold_rows
    np.testing.assert_array_equal(again.examples["film"]["DnCNN tiny"], first.examples["film"]["DnCNN tiny"])
    other = run_em_study(images, methods=methods, out=tmp_path / "s", reuse=True, seed=1, progress=False)
    assert len(calls) == 12 and not other.reused  # another split and noise: trained afresh
    run_em_study(images, methods=methods, out=tmp_path / "s", reuse=False, progress=False)
    assert len(calls) == 18  # reuse is opt-in


def test_a_study_cut_to_one_noise_draws_the_same_images_as_the_whole_study(tmp_path):
    # the study is run one noise per core and assembled with reuse: film alone must be film of the whole
    from pairless.sim.em_folder import read_clean_folder

    images = [im for _, im in read_clean_folder(_slices(tmp_path / "clean"))]
    methods = [method("noisy")]
    whole = run_em_study(images, methods=methods, out=tmp_path / "s", reuse=True, progress=False)
    film = run_em_study(
        images, methods=methods, out=tmp_path / "s", reuse=True, noise_types=("film",), progress=False
    )
    assert len(film.reused) == 3  # every film row read back: the same noisy images
    assert film.input_psnr["film"] == whole.input_psnr["film"]
    assert film.input_psnr["film"] != whole.input_psnr["charge"]


@pytest.mark.slow
def test_reuse_trains_again_when_a_method_setting_changes(tmp_path):
    from pairless.methods.iscl import ISCLConfig
    from pairless.sim.em_folder import read_clean_folder

    images = [im for _, im in read_clean_folder(_slices(tmp_path / "clean"))]
    calls = []
    counted = _counted_dncnn(calls)

    def with_steps(steps):
        return [Method("dncnn", counted, "DnCNN tiny", settings=lambda profile: {"steps": steps})]

    run_em_study(
        images, methods=with_steps(5), out=tmp_path / "s", reuse=True, noise_types=("charge",), progress=False
    )
    run_em_study(
        images, methods=with_steps(5), out=tmp_path / "s", reuse=True, noise_types=("charge",), progress=False
    )
    assert len(calls) == 3  # same settings: read back
    run_em_study(
        images, methods=with_steps(9), out=tmp_path / "s", reuse=True, noise_types=("charge",), progress=False
    )
    assert len(calls) == 6  # other steps: trained again
    # every ISCL setting is in the key: a changed profile trains the rows again
    assert method("iscl-bin").settings("quick") == ISCLConfig.for_profile("quick").model_dump(mode="json")
    assert method("iscl-bin", iscl_steps=600).settings("quick")["steps"] == 600
    assert method("gaussian").settings is None


def test_rank_agreement_is_spearman_against_table_2():
    cols = ("charge_psnr", "charge_ssim", "film_psnr", "film_ssim")
    rows = [
        {
            "method": name,
            **{c: v for c, v in zip(cols, vals)},
            **{f"paper_{c}": v for c, v in zip(cols, vals)},
        }
        for name, vals in PAPER_TABLE2.items()
    ]
    assert all(s["rho"] == pytest.approx(1.0) for s in rank_agreement(rows).values())
    flipped = [{**r, "film_psnr": -r["film_psnr"]} for r in rows]
    s = rank_agreement(flipped)["film_psnr"]
    assert s["rho"] < -0.9 and s["n"] == len(PAPER_TABLE2)
    presets = rank_agreement(rows, names=[n for n in PAPER_TABLE2 if n.startswith("iscl-")])
    assert presets["charge_psnr"]["n"] == 6


def test_spearman_and_its_interval_on_a_known_case():
    # one swap in 5 ranks twice: ρ = 1 - 6·Σd²/(n(n²-1)) = 1 - 6·4/120 = 0.8
    s = spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5])
    assert s["rho"] == pytest.approx(0.8) and s["n"] == 5
    half = 1.959964 * np.sqrt((1 + 0.8**2 / 2) / 2)  # Bonett–Wright standard error, n - 3 = 2
    assert s["low"] == pytest.approx(np.tanh(np.arctanh(0.8) - half), abs=1e-6)
    assert s["high"] == pytest.approx(np.tanh(np.arctanh(0.8) + half), abs=1e-6)
    assert -1 < s["low"] < 0.8 < s["high"] < 1  # five rows cannot pin an ordering down
    ranks = np.arange(60.0)
    many = spearman(ranks, ranks + np.random.default_rng(0).normal(0, 10, 60))
    assert many["low"] < many["rho"] < many["high"] and many["high"] - many["low"] < s["high"] - s["low"]
    assert np.isnan(spearman([1, 2, 3], [3, 2, 1])["low"])  # n < 4: no interval


def test_paired_test_on_known_cases():
    base = np.linspace(20, 24, 10)
    better = paired_test(base + 0.1, base)
    # all ten differences positive: exact two-sided p = 2 / 2**10
    assert (
        better["p"] == pytest.approx(2 / 1024)
        and better["n"] == 10
        and better["median_diff"] == pytest.approx(0.1)
    )
    rng = np.random.default_rng(0)
    noise = paired_test(base + rng.normal(0, 0.1, 10), base + rng.normal(0, 0.1, 10))
    assert noise["p"] > 0.05
    assert paired_test(base, base)["p"] == 1.0
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    with pytest.raises(PairlessError, match="same test images"):
        paired_test([1.0, 2.0], [1.0])


def test_preset_tests_and_claims_pair_scores_by_fold_and_image():
    rows = []
    for fold in range(3):
        for image in range(4):
            base = 20 + image + fold
            for name, gain in (
                ("iscl-optimized", 1.0),
                ("iscl-bin", 0.9),
                ("iscl-bn", 0.0),
                ("iscl-ln", 1.2),
            ):
                rows.append(
                    {
                        "method": name,
                        "fold": fold,
                        "noise": "charge",
                        "image": fold * 4 + image,
                        "psnr": base + gain + 0.01 * image,
                        "ssim": 0.5,
                    }
                )
    tests = {t["preset"]: t for t in preset_tests(rows)}
    assert set(tests) == {"iscl-bin", "iscl-bn", "iscl-ln"} and all(t["n"] == 12 for t in tests.values())
    assert tests["iscl-bn"]["mean_diff"] == pytest.approx(-1.0) and tests["iscl-bn"]["p"] < 0.001
    assert (
        tests["iscl-ln"]["mean_diff"] == pytest.approx(0.2)
        and tests["iscl-ln"]["p_holm"] >= tests["iscl-ln"]["p"]
    )
    checks = {(c["claim"], c["noise"]): c["verdict"] for c in claim_checks(rows)}
    assert checks[("ISCL + BIN > ISCL + BN", "charge")] == "holds (p < 0.05)"
    assert (
        checks[("ISCL optimized (IN / SpecNorm / SwitchNorm) > ISCL + LN", "charge")] == "reversed (p < 0.05)"
    )
    assert not any(noise == "film" for _, noise in checks)  # no film rows: no film tests


def test_missing_clean_folder_says_how_to_fix(tmp_path):
    with pytest.raises(PairlessError, match="--clean DIR"):
        reproduce_em(tmp_path / "out", clean=tmp_path / "nowhere", methods=["noisy"], progress=False)
    with pytest.raises(PairlessError, match="folds"):
        reproduce_em(
            tmp_path / "out", clean=_slices(tmp_path / "few", n=3), methods=["noisy"], progress=False
        )


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
    assert (
        main(["simulate", "em", "--clean", str(clean), "--noise", "charge", "--out", str(tmp_path / "n")])
        == 0
    )
    assert (tmp_path / "n" / "0.png").is_file()
    assert (
        main(
            [
                "simulate",
                "em",
                "--clean",
                str(clean),
                "--noise",
                "film",
                "--mode",
                "additive",
                "--out",
                str(tmp_path / "a"),
            ]
        )
        == 0
    )
    assert (tmp_path / "a" / "1.png").is_file()
    assert (
        main(["simulate", "em", "--clean", str(clean), "--noise", "salt", "--out", str(tmp_path / "m")]) == 2
    )
    assert "unknown EM noise" in capsys.readouterr().err and not (tmp_path / "m").exists()


def test_noise_level_on_isbi_slices(shared_data):
    from skimage.metrics import peak_signal_noise_ratio

    from pairless.sim.em import em_noise
    from pairless.sim.em_folder import read_clean_folder

    folder = shared_data / "em" / "isbi2012" / "train_image"
    if not folder.is_dir():
        pytest.skip("ISBI 2012 slices not in the shared data")
    slices = [im for _, im in read_clean_folder(folder)[:3]]
    for kind in ("charge", "film"):
        for mode in ("structural", "additive"):
            level = np.mean(
                [
                    peak_signal_noise_ratio(y, em_noise(y, kind=kind, mode=mode, rng=i), data_range=1.0)
                    for i, y in enumerate(slices)
                ]
            )
            assert 18.5 < level < 21.5, (kind, mode, level)


def test_reproduce_em_cli_reports_a_missing_folder(tmp_path, capsys):
    from pairless.cli import main

    code = main(
        [
            "reproduce",
            "em",
            "--out",
            str(tmp_path / "r"),
            "--clean",
            str(tmp_path / "nowhere"),
            "--methods",
            "noisy,median",
        ]
    )
    assert code == 2 and "--clean DIR" in capsys.readouterr().err
    assert main(["reproduce", "em", "--out", str(tmp_path / "r"), "--methods", "noisy,resnet"]) == 2
    assert "unknown EM study method 'resnet'" in capsys.readouterr().err
    assert (
        main(
            [
                "reproduce",
                "em",
                "--out",
                str(tmp_path / "r"),
                "--clean",
                str(tmp_path / "nowhere"),
                "--methods",
                "noisy",
                "--noise-mode",
                "pasted",
            ]
        )
        == 2
    )
    assert "unknown EM noise mode" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_loss_curves_figure_reads_each_presets_training_log(tmp_path):
    from pairless.experiments.em import _loss_figure

    assert _loss_figure(tmp_path, ["iscl-bn"]) is None  # nothing trained: no figure
    for name, scale in (("iscl-bn", 1.0), ("iscl-optimized", 0.5)):
        folder = tmp_path / "models" / "film" / "fold0" / name / "model" / "training"
        folder.mkdir(parents=True)
        rows = ["step,loss_d,loss_g,loss_h,val_loss"] + [
            f"{s},{2 - s / 400 * scale},{30 / s},{0.1 * scale},0.2" for s in (100, 200, 300)
        ]
        (folder / "training_log.csv").write_text("\n".join(rows) + "\n")
    fig = _loss_figure(tmp_path, ["noisy", "iscl-bn", "iscl-optimized"])
    d, g, h = fig.axes[:3]
    assert [len(ax.lines) for ax in (d, g, h)] == [2, 2, 2]  # one curve per preset in each of D, G, H
    np.testing.assert_allclose(d.lines[1].get_ydata(), [2 - 0.125, 2 - 0.25, 2 - 0.375])
    assert "film" in d.get_title() and "D" in d.get_title()


def test_table_2_baselines_are_rows_with_their_configs_and_quan_is_shown_as_not_reproduced():
    from pairless.experiments.em import METHODS, NOT_REPRODUCED, _not_reproduced_rows, method
    from pairless.methods.adn import ADNConfig

    assert {"cagan", "uidnet", "adn", "bm3d-psd"} <= set(METHODS) and "quan" not in METHODS
    assert method("adn").settings("quick") == ADNConfig.for_profile("quick").model_dump(mode="json")
    assert PAPER_TABLE2["adn"] == (25.67, 0.8686, 24.37, 0.8535) and "quan" in NOT_REPRODUCED
    (row,) = _not_reproduced_rows()
    assert "not reproduced: no code or paper text available" in row["method"]
    assert row["paper charge psnr"] == "22.32" and row["charge psnr"] == "—"


def test_every_other_method_is_tested_against_optimized_and_the_unpaired_ordering_is_checked():
    from pairless.experiments.em import method_tests

    rows = [
        {
            "method": name,
            "fold": fold,
            "noise": "film",
            "image": fold * 4 + i,
            "psnr": 20 + i + gain,
            "ssim": 0.5,
        }
        for fold in range(2)
        for i in range(4)
        for name, gain in (("iscl-optimized", 2.0), ("adn", 1.0), ("uidnet", 1.5), ("noisy", 0.0))
    ]
    tests = {t["method"]: t for t in method_tests(rows)}
    assert set(tests) == {"adn", "uidnet"}  # not the input, not the reference
    assert tests["adn"]["mean_diff"] == pytest.approx(-1.0) and tests["adn"]["p_holm"] >= tests["adn"]["p"]
    checks = {c["claim"]: c["verdict"] for c in claim_checks(rows)}
    assert checks["ISCL optimized (IN / SpecNorm / SwitchNorm) > ADN"] == "holds (p < 0.05)"
    assert checks["ADN > UIDNet"] == "reversed (p < 0.05)"
