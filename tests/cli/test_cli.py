"""The command line end to end: denoise and evaluate work, and every user mistake gives exit 2,
one clear line on stderr, no traceback and no file written."""

import json

import numpy as np
import pytest
import tifffile
from skimage import metrics as sk

from pairless.cli import main


@pytest.fixture
def noisy(tmp_path):
    rng = np.random.default_rng(0)
    clean = np.zeros((40, 44), np.float32)
    clean[10:30, 12:34] = 100.0
    noisy = clean + rng.normal(0, 20, clean.shape).astype(np.float32)
    tifffile.imwrite(tmp_path / "clean.tif", clean)
    tifffile.imwrite(tmp_path / "noisy.tif", noisy)
    return tmp_path


def test_denoise_writes_one_output_per_input_with_the_same_name(noisy, capsys):
    out = noisy / "out"
    assert (
        main(
            [
                "denoise",
                "median",
                str(noisy / "noisy.tif"),
                str(noisy / "clean.tif"),
                "--out",
                str(out),
                "--size",
                "3",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["clean.tif", "noisy.tif"]
    result = tifffile.imread(out / "noisy.tif")
    assert result.dtype == np.float32 and result.shape == (40, 44)
    clean = tifffile.imread(noisy / "clean.tif")
    before = sk.peak_signal_noise_ratio(clean, tifffile.imread(noisy / "noisy.tif"), data_range=100)
    assert sk.peak_signal_noise_ratio(clean, result, data_range=100) > before + 3


def test_denoise_auto_tunes_without_clean_data(noisy):
    out = noisy / "out"
    assert main(["denoise", "gaussian", str(noisy / "noisy.tif"), "--out", str(out), "--auto"]) == 0
    assert (out / "noisy.tif").is_file()


def test_evaluate_matches_skimage_and_writes_json(noisy, capsys):
    rng = np.random.default_rng(3)
    reference = rng.random((32, 33)).astype(np.float32)
    images = [reference + s * rng.standard_normal(reference.shape).astype(np.float32) for s in (0.05, 0.2)]
    tifffile.imwrite(noisy / "ref.tif", reference)
    for i, image in enumerate(images):
        tifffile.imwrite(noisy / f"im{i}.tif", image)
    paths = [str(noisy / f"im{i}.tif") for i in range(2)]
    target = noisy / "scores.json"
    code = main(
        [
            "evaluate",
            "--reference",
            str(noisy / "ref.tif"),
            "--images",
            *paths,
            "--data-range",
            "1",
            "--json",
            str(target),
        ]
    )
    assert code == 0
    assert "im1.tif" in capsys.readouterr().out
    rows = json.loads(target.read_text())["images"]
    assert [r["image"] for r in rows] == paths
    for row, image in zip(rows, images):
        assert row["psnr"] == pytest.approx(
            sk.peak_signal_noise_ratio(reference, image, data_range=1.0), abs=1e-6
        )
        assert row["nrmse"] == pytest.approx(sk.normalized_root_mse(reference, image), abs=1e-6)
        assert row["ssim"] == pytest.approx(
            sk.structural_similarity(reference, image, data_range=1.0), abs=1e-6
        )
        assert row["conventions"]["data_range"] == 1.0
        # the scores above are scikit-image's defaults: the row must name that window, not Wang et al.'s
        assert (
            row["conventions"]["ssim_window"]
            == "7x7 uniform window, sample covariance (scikit-image default)"
        )


def _bad_inputs(tmp_path):
    """(name, argv, words expected in the message) for every kind of user mistake."""
    good = np.ones((16, 16), np.float32)
    tifffile.imwrite(tmp_path / "good.tif", good)
    tifffile.imwrite(tmp_path / "small.tif", np.ones((8, 8), np.float32))
    nan = good.copy()
    nan[3, 4] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", nan)
    inf = good.copy()
    inf[0, 0] = np.inf
    np.save(tmp_path / "inf.npy", inf)
    np.save(tmp_path / "empty.npy", np.zeros((0, 5), np.float32))
    (tmp_path / "text.tif").write_text("this is not an image\n")
    (tmp_path / "notes.txt").write_text("hello\n")
    (tmp_path / "corrupt.tif").write_bytes((tmp_path / "good.tif").read_bytes()[:40])
    (tmp_path / "not-a-model").mkdir()
    out = str(tmp_path / "out")
    g = str(tmp_path / "good.tif")
    return [
        ("missing file", ["denoise", "median", str(tmp_path / "nope.tif"), "--out", out], "nope.tif"),
        ("corrupt file", ["denoise", "median", str(tmp_path / "corrupt.tif"), "--out", out], "corrupt.tif"),
        ("not an image", ["denoise", "median", str(tmp_path / "text.tif"), "--out", out], "text.tif"),
        ("unsupported format", ["denoise", "median", str(tmp_path / "notes.txt"), "--out", out], "notes.txt"),
        ("empty image", ["denoise", "median", str(tmp_path / "empty.npy"), "--out", out], "empty"),
        ("NaN values", ["denoise", "median", str(tmp_path / "nan.tif"), "--out", out], "NaN"),
        ("Inf values", ["denoise", "median", str(tmp_path / "inf.npy"), "--out", out], "Inf"),
        ("wrong axes", ["denoise", "median", g, "--axes", "XYZ", "--out", out], "axes"),
        ("axes length", ["denoise", "median", g, "--axes", "ZYX", "--out", out], "axes"),
        ("shape mismatch", ["evaluate", "--reference", g, "--images", str(tmp_path / "small.tif")], "shape"),
        ("unknown method", ["denoise", "wiener", g, "--out", out], "wiener"),
        ("not a model", ["denoise", str(tmp_path / "not-a-model"), g, "--out", out], "not a pairless model"),
        ("bad option value", ["denoise", "median", g, "--size", "0", "--out", out], "size"),
    ]


@pytest.mark.parametrize("case", range(13))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, case):
    name, argv, words = _bad_inputs(tmp_path)[case]
    before = sorted(tmp_path.rglob("*"))
    assert main(argv) == 2, name
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (name, captured.err)
    assert words.lower() in lines[0].lower(), (name, lines[0])
    assert "Traceback" not in captured.err + captured.out
    assert sorted(tmp_path.rglob("*")) == before, f"{name}: files were written"


def test_a_bad_file_among_good_ones_writes_nothing(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.ones((16, 16), np.float32))
    nan = np.ones((16, 16), np.float32)
    nan[0, 0] = np.nan
    tifffile.imwrite(tmp_path / "b.tif", nan)
    out = tmp_path / "out"
    assert (
        main(["denoise", "median", str(tmp_path / "a.tif"), str(tmp_path / "b.tif"), "--out", str(out)]) == 2
    )
    assert not out.exists() or not any(out.iterdir())


def test_denoise_refuses_to_overwrite_its_input(tmp_path, capsys):
    path = tmp_path / "a.tif"
    data = np.arange(256, dtype=np.float32).reshape(16, 16)
    tifffile.imwrite(path, data)
    assert main(["denoise", "median", str(path), "--out", str(tmp_path)]) == 2
    assert "overwrite" in capsys.readouterr().err
    np.testing.assert_array_equal(tifffile.imread(path), data)


def test_help_shows_an_example(capsys):
    assert main(["denoise", "--help"]) == 0
    assert "Example: pairless denoise" in capsys.readouterr().out
