"""OME-Zarr (NGFF 0.4 and 0.5): inputs written and outputs read back by ome-zarr-py, an independent
implementation."""

import json

import numpy as np
import pytest
import zarr

from pairless.cli import main
from pairless.denoiser import denoise_array
from pairless.errors import PairlessError
from pairless.inference.chunked import denoise_chunked
from pairless.io.ngff import open_ngff, pyramid_shapes
from pairless.methods.classical import make_classical

ome_zarr = pytest.importorskip("ome_zarr", reason="OME-Zarr support needs the 'ome' extra (ome-zarr-py)")
from ome_zarr.format import FormatV04, FormatV05  # noqa: E402
from ome_zarr.io import parse_url  # noqa: E402
from ome_zarr.reader import Reader  # noqa: E402
from ome_zarr.writer import write_multiscale  # noqa: E402

AXES = [
    {"name": "c", "type": "channel"},
    {"name": "z", "type": "space", "unit": "micrometer"},
    {"name": "y", "type": "space", "unit": "micrometer"},
    {"name": "x", "type": "space", "unit": "micrometer"},
]
SCALE = [1.0, 2.0, 0.5, 0.25]
FORMATS = {"0.4": FormatV04(), "0.5": FormatV05()}


def _ome(path, data, version, axes=AXES, scale=SCALE):
    """An OME-Zarr image written by ome-zarr-py: two levels, with physical scale and units."""
    fmt = FORMATS[version]
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
    half = scale[:-2] + [scale[-2] * 2, scale[-1] * 2]
    write_multiscale(
        [data, data[..., ::2, ::2]],
        group,
        axes=axes,
        fmt=fmt,
        coordinate_transformations=[[{"type": "scale", "scale": scale}], [{"type": "scale", "scale": half}]],
    )
    return path


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return (rng.normal(100, 10, (2, 3, 150, 140))).astype(np.float32)


def _read(path):
    node = list(Reader(parse_url(str(path)))())[0]
    return node.metadata, [np.asarray(level) for level in node.data]


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_round_trip_keeps_axes_scale_units_and_builds_the_pyramid(tmp_path, image, version):
    source = _ome(tmp_path / "in.ome.zarr", image, version)
    gaussian = make_classical("gaussian", sigma=1.0)
    target = denoise_chunked(source, tmp_path / "out" / "in.ome.zarr", gaussian, block=64, halo=8)

    metadata, levels = _read(target)
    assert metadata["axes"] == AXES
    transforms = metadata["coordinateTransformations"]
    assert transforms[0][0] == {"type": "scale", "scale": SCALE}
    assert transforms[1][0] == {"type": "scale", "scale": [1.0, 2.0, 1.0, 0.5]}
    assert (
        [lv.shape for lv in levels]
        == pyramid_shapes(image.shape, "CZYX")
        == [(2, 3, 150, 140), (2, 3, 75, 70)]
    )
    # full resolution: the block-by-block result equals the whole image denoised at once (halo ≥ 4σ)
    np.testing.assert_allclose(levels[0], denoise_array(image, gaussian, axes="CZYX"), rtol=1e-5, atol=1e-3)
    # level 1 is the 2×2 mean of level 0
    mean = levels[0].reshape(2, 3, 75, 2, 70, 2).mean(axis=(3, 5))
    np.testing.assert_allclose(levels[1], mean, rtol=1e-6)
    group = zarr.open_group(str(target), mode="r")
    assert group.metadata.zarr_format == (2 if version == "0.4" else 3)
    assert group.attrs["pairless"]["method"] == "ClassicalDenoiser"
    assert group.attrs["pairless"]["pairless"]
    reopened = open_ngff(target)
    assert (reopened.version, reopened.letters, reopened.scale) == (version, "CZYX", SCALE)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["in.ome.zarr"]  # no temporary left


def test_pyramid_shapes_halve_y_and_x_rounding_up_and_stop_at_the_minimum_edge():
    assert pyramid_shapes((5, 301, 260), "ZYX") == [(5, 301, 260), (5, 151, 130), (5, 76, 65)]
    assert pyramid_shapes((9, 9), "YX", levels=3) == [(9, 9), (5, 5), (3, 3)]
    assert pyramid_shapes((2, 4000, 64), "TYX") == [(2, 4000, 64)]


def test_odd_sizes_average_the_last_row_with_itself(tmp_path):
    data = np.arange(5 * 7, dtype=np.float32).reshape(5, 7)
    axes = AXES[2:]
    source = _ome(tmp_path / "odd.ome.zarr", data, "0.5", axes=axes, scale=[0.5, 0.25])
    from pairless.io.ngff import NGFFWriter

    like = open_ngff(source)
    writer = NGFFWriter(
        tmp_path / "w.ome.zarr", like, chunks=(2, 3), provenance={"pairless": "test"}, levels=2
    )
    writer.full[:] = data
    writer.finish()
    padded = np.pad(data, ((0, 1), (0, 1)), mode="edge")
    expected = padded.reshape(3, 2, 4, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(zarr.open_array(str(tmp_path / "w.ome.zarr" / "1"), mode="r")[:], expected)
    metadata, _ = _read(tmp_path / "w.ome.zarr")
    # the mean of a 2×2 block sits half an input pixel in from its corner
    assert metadata["coordinateTransformations"][1] == [
        {"type": "scale", "scale": [1.0, 0.5]},
        {"type": "translation", "translation": [0.25, 0.125]},
    ]


def test_cli_denoises_ome_zarr_block_by_block_with_provenance(tmp_path, image, capsys):
    source = _ome(tmp_path / "cells.ome.zarr", image, "0.4")
    assert (
        main(
            [
                "denoise",
                "gaussian",
                str(source),
                "--out",
                str(tmp_path / "d"),
                "--sigma",
                "1",
                "--block",
                "64",
            ]
        )
        == 0
    )
    target = tmp_path / "d" / "cells.ome.zarr"
    metadata, levels = _read(target)
    assert metadata["axes"] == AXES and levels[0].shape == image.shape
    assert zarr.open_group(str(target), mode="r").attrs["pairless"]["method"] == "gaussian"


def _bad(tmp_path, case):
    if case == "no multiscales":
        group = zarr.open_group(str(tmp_path / "bad.ome.zarr"), mode="w")
        group.create_array("0", shape=(8, 8), dtype="float32")
        group.attrs["something"] = 1
    elif case == "axis order":
        data = np.zeros((8, 8, 2), np.float32)
        axes = [
            {"name": "y", "type": "space"},
            {"name": "x", "type": "space"},
            {"name": "c", "type": "channel"},
        ]
        group = zarr.open_group(str(tmp_path / "bad.ome.zarr"), mode="w", zarr_format=2)
        group.create_array("0", data=data, chunk_key_encoding={"name": "v2", "separator": "/"})
        group.attrs["multiscales"] = [
            {
                "version": "0.4",
                "axes": axes,
                "datasets": [
                    {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 1]}]}
                ],
            }
        ]
    elif case == "unknown axis":
        axes = [{"name": "q", "type": "space"}, AXES[2], AXES[3]]
        _ome(
            tmp_path / "bad.ome.zarr",
            np.zeros((2, 8, 8), np.float32),
            "0.5",
            axes=axes,
            scale=[1.0, 1.0, 1.0],
        )
    return tmp_path / "bad.ome.zarr"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no multiscales", "without OME-Zarr multiscales metadata"),
        ("axis order", "last two axes are y, x"),
        ("unknown axis", "named t, c, z, y, x, not q"),
    ],
)
def test_bad_ome_zarr_gets_one_line_and_nothing_is_written(tmp_path, capsys, case, message):
    source = _bad(tmp_path, case)
    with pytest.raises(PairlessError, match=message):
        denoise_chunked(source, tmp_path / "o.zarr", make_classical("gaussian", sigma=1.0))
    assert main(["denoise", "gaussian", str(source), "--out", str(tmp_path / "d"), "--sigma", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.ome.zarr"]


def test_a_run_killed_while_building_the_pyramid_leaves_nothing_under_the_final_name(
    tmp_path, image, monkeypatch
):
    from pairless.io import ngff

    source = _ome(tmp_path / "in.ome.zarr", image, "0.5")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ngff, "_downsample", killed)
    (tmp_path / "out").mkdir()
    with pytest.raises(KeyboardInterrupt):
        denoise_chunked(
            source, tmp_path / "out" / "in.ome.zarr", make_classical("gaussian", sigma=1.0), block=64
        )
    assert list((tmp_path / "out").iterdir()) == []


def test_the_source_ngff_metadata_is_read_as_stored(tmp_path, image):
    source = _ome(tmp_path / "in.ome.zarr", image, "0.5")
    opened = open_ngff(source)
    assert opened.level == "s0" and opened.units == {"z": "micrometer", "y": "micrometer", "x": "micrometer"}
    attrs = json.loads((source / "zarr.json").read_text())["attributes"]
    assert attrs["ome"]["version"] == "0.5"
