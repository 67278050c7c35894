"""BSD68 experiment, end to end on a miniature data folder (2 train, 2 test images, a few steps)."""

import csv

import numpy as np
import pytest
from PIL import Image

from pairless.cli import main
from pairless.errors import PairlessError
from pairless.experiments.bsd68 import PAPER_N2V_PSNR, reproduce_bsd68
from pairless.methods.n2v import N2VConfig


def _write_pngs(folder, shapes, seed):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i, shape in enumerate(shapes):
        yy, xx = np.mgrid[: shape[0], : shape[1]]
        image = 128 + 60 * np.sin(xx / 7.0 + i) * np.cos(yy / 9.0) + rng.normal(0, 5, shape)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"img{i:02d}.png")


@pytest.mark.slow  # ~10 s on a quiet 2-core machine, 25-35 s when it is shared
def test_reproduce_bsd68_writes_the_table_with_the_paper_reference(tmp_path):
    data = tmp_path / "natural"
    _write_pngs(data / "bsd400_train", [(64, 64), (64, 64)], seed=0)
    _write_pngs(data / "bsd68", [(48, 40), (40, 56)], seed=1)
    config = N2VConfig(steps=4, val_every=2, batch_size=4, patch_size=32, max_val_patches=4)
    html = reproduce_bsd68(tmp_path / "out", data=data, config=config, progress=False)

    assert html.is_file()
    rows = list(csv.DictReader(open(tmp_path / "out" / "results.csv")))
    by_method = {r["method"]: r for r in rows}
    # σ = 25 on the 0–255 scale with data range 255: the noisy input's PSNR is 20·log10(255/25) ≈ 20.17 dB
    assert abs(float(by_method["noisy input"]["psnr_db"]) - 20.17) < 0.6
    assert float(by_method["Noise2Void (this run)"]["psnr_db"]) > 0
    assert any(float(r["psnr_db"]) == PAPER_N2V_PSNR for r in rows)
    assert {"Gaussian filter (J-invariance)", "Noise2Void + 8-fold TTA (this run)"} <= set(by_method)
    assert (tmp_path / "out" / "model" / "weights.safetensors").is_file()
    assert "data range 255" in (tmp_path / "out" / "report.md").read_text()


def test_missing_data_is_a_one_line_error_naming_the_fix(tmp_path, capsys):
    with pytest.raises(PairlessError, match="--data"):
        reproduce_bsd68(tmp_path / "out", data=tmp_path)
    assert main(["reproduce", "bsd68", "--out", str(tmp_path / "out"), "--data", str(tmp_path)]) == 2
    assert "bsd400_train/" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
