"""Fuzzed input (hypothesis): every public entry point either works or raises PairlessError.

Random shapes (1-pixel images and singleton axes included), dtypes, axes strings, formats, NaN/Inf,
constant images and huge values go through image I/O, the classical denoisers, the metrics and the
``denoise`` / ``evaluate`` commands.  A result must be right (values kept within the documented
dtype policy, shape and geometry kept, finite output), or the call must fail with pairless's own
error: never another exception, never a silent wrong result, never a half-written file.
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from pairless.cli import main
from pairless.denoiser import denoise_array
from pairless.errors import PairlessError
from pairless.io import Image, read_image, write_image
from pairless.methods.classical import MAX_BLUR_PIXELS, make_classical
from pairless.metrics.image import LIMIT, SSIM_VALUE_LIMIT, nrmse, psnr, si_psnr, ssim

DTYPES = ("uint8", "uint16", "int16", "int32", "float16", "float32", "float64", "bool")
FILLS = ("random", "constant", "zero", "huge", "dtype-max", "dtype-min", "nan", "inf")


def fuzz(examples: int):
    """Settings sized so the whole file stays well under a minute on a loaded 2-core machine.

    ``PAIRLESS_FUZZ_SCALE=20`` multiplies the examples for a deeper (nightly) search.
    """
    scale = float(os.environ.get("PAIRLESS_FUZZ_SCALE", "1"))
    return settings(
        max_examples=max(1, round(examples * scale)),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


seeds = st.integers(0, 2**32 - 1)
fills = st.just("random") | st.sampled_from(FILLS)  # plain random data about half the time


def _array(shape, dtype, fill, seed) -> np.ndarray:
    """An array of ``dtype``: random, constant, or with huge / extreme / non-finite pixels planted."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return np.full(shape, fill != "zero") if fill in ("constant", "zero") else rng.random(shape) < 0.5
    info = np.iinfo(dtype) if dtype.kind in "iu" else np.finfo(dtype)
    if dtype.kind in "iu":
        data = rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    else:
        data = rng.normal(0, 100, shape).astype(dtype)
    if fill == "constant":
        return np.full(shape, data.flat[0], dtype)
    if fill == "zero":
        return np.zeros(shape, dtype)
    spot = tuple(int(rng.integers(n)) for n in shape)
    value = {
        "huge": min(1e30, float(info.max)),
        "dtype-max": info.max,
        "dtype-min": info.min,
        "nan": np.nan if dtype.kind == "f" else info.max,
        "inf": -np.inf if dtype.kind == "f" else info.min,
    }.get(fill)
    if value is not None:
        data[spot] = value
    return data


@st.composite
def shapes(draw, min_dims=2, max_dims=4, max_side=6, min_side=1):
    """Small shapes with 1-pixel sides likely (hypothesis shrinks toward them anyway)."""
    ndim = draw(st.integers(min_dims, max_dims))
    return tuple(draw(st.one_of(st.just(min_side), st.integers(min_side, max_side))) for _ in range(ndim))


@st.composite
def axes_choices(draw):
    """Mostly an order of S, T, C, Z (see :func:`_axes`), sometimes random text."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.text(alphabet="STCZYXQyxz ", max_size=6))
    return "".join(draw(st.permutations("STCZ")))


def _axes(choice: str, ndim: int) -> str:
    """An order of STCZ gives a valid axes string for ``ndim`` (its first letters, then YX); text stays."""
    return choice[: ndim - 2] + "YX" if sorted(choice) == sorted("STCZ") else choice


def _valid_axes(axes: str, ndim: int, *, end_in_yx: bool = True) -> bool:
    upper = axes.upper()
    return (
        set(upper) <= set("STCZYX")
        and len(set(upper)) == len(upper) == ndim
        and {"Y", "X"} <= set(upper)
        and (upper.endswith("YX") or not end_in_yx)
    )


def _finite(data: np.ndarray) -> bool:
    return data.dtype.kind not in "fc" or bool(np.all(np.isfinite(data)))


def _files(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*"))


# ---------------------------------------------------------------- image I/O


def _stored(data: np.ndarray, target: np.dtype) -> np.ndarray | None:
    """The values a write with ``target`` dtype must store (the io module's policy), or None: refuse."""
    values = data.astype(np.float64)
    if target.kind == "f":
        too_big = np.isfinite(values) & (np.abs(values) > np.finfo(target).max)
        return None if too_big.any() else data.astype(target)
    if not np.all(np.isfinite(values)):
        return None
    info = np.iinfo(target)
    slack = 0.05 * (float(info.max) - float(info.min))
    if values.min() < info.min - slack or values.max() > info.max + slack:
        return None
    return np.clip(np.round(values), info.min, info.max).astype(target)


@fuzz(200)
@given(
    shape=shapes(),
    dtype=st.sampled_from(DTYPES),
    fill=fills,
    seed=seeds,
    suffix=st.sampled_from([".tif", ".npy", ".nii.gz", ".png"]),
    axes=axes_choices(),
    voxel=st.none() | st.tuples(*[st.floats(1e-3, 50.0)] * 3),
    write_dtype=st.sampled_from([None, "float32", "float64", "uint8", "uint16", "int16"]),
)
@example(  # 1.8e308 was stored as float32 Inf
    shape=(3, 3),
    dtype="float64",
    fill="dtype-max",
    seed=0,
    suffix=".tif",
    axes="STCZ",
    voxel=None,
    write_dtype="float32",
)
@example(  # 1-pixel Y and X beside another axis: ImageJ TIFF dropped a singleton, (2, 1, 1) came back (2, 1)
    shape=(2, 1, 1),
    dtype="uint8",
    fill="random",
    seed=0,
    suffix=".tif",
    axes="TSCZ",
    voxel=None,
    write_dtype=None,
)
def test_write_then_read_keeps_values_axes_and_voxel_size_or_refuses(
    shape, dtype, fill, seed, suffix, axes, voxel, write_dtype
):
    array = _array(shape, dtype, fill, seed)
    axes = _axes(axes, array.ndim)
    if voxel is not None:  # one size per spatial axis
        voxel = voxel[3 - min(3, sum(a in "ZYX" for a in axes.upper())) :]
    try:
        image = Image(array, axes, voxel_size=voxel)
    except PairlessError:
        assert not _valid_axes(axes, array.ndim)
        return
    assert _valid_axes(axes, array.ndim)

    kept = np.dtype(np.uint8) if array.dtype == bool else array.dtype
    target = kept if write_dtype is None else np.dtype(write_dtype)
    expected = _stored(array, target)
    # formats that must take the image: .tif and .npy anything, NIfTI its axes and dtypes, PNG gray integers
    must_write = expected is not None and (
        suffix in (".tif", ".npy")
        or (suffix == ".nii.gz" and image.axes in ("YX", "ZYX", "TZYX") and target != np.float16)
        or (suffix == ".png" and image.axes == "YX" and target in (np.uint8, np.uint16))
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"image{suffix}"
        try:
            written = write_image(path, image, dtype=write_dtype)
        except PairlessError:
            assert not must_write, "a write that the documented policy allows was refused"
            assert _files(tmp) == [], "a refused write left a file behind"
            return
        assert expected is not None, f"write of {array.dtype} as {target} should have been refused"
        assert _files(tmp) == [path.name]
        try:
            back = read_image(written, axes=image.axes if suffix == ".npy" else None)
        except PairlessError:
            assert not _finite(expected), "a file pairless wrote cannot be read back"
            return
    assert _finite(expected)
    assert back.data.dtype == expected.dtype and back.data.shape == expected.shape
    np.testing.assert_array_equal(back.data, expected)
    assert back.axes == image.axes
    if voxel is not None and suffix == ".png":  # PNG stores whole pixels per metre
        assert np.allclose(1000 / np.array(back.voxel_size), 1000 / np.array(voxel), rtol=0, atol=0.5 + 1e-9)
    elif voxel is not None and suffix != ".npy":
        assert back.voxel_size == pytest.approx(image.voxel_size, rel=1e-5)


# ---------------------------------------------------------------- classical denoisers

HAVE_BM3D = importlib.util.find_spec("bm3d") is not None


@pytest.mark.filterwarnings("error::RuntimeWarning")  # an overflow or 0/0 inside a filter is a silent bug
@fuzz(120)
@given(
    method=st.sampled_from(["gaussian", "median", "nlm", "bm3d"]),
    auto=st.booleans(),
    shape=shapes(max_dims=3, max_side=9),
    dtype=st.sampled_from(DTYPES),
    fill=fills,
    seed=seeds,
    axes=axes_choices(),
    sigma=st.none() | st.floats(0.1, 5) | st.floats(allow_nan=True, allow_infinity=True),
    size=st.none() | st.integers(1, 5) | st.integers(-2, 10**6),
)
@example(
    method="gaussian",
    auto=False,
    shape=(16, 16),
    dtype="float32",
    fill="random",
    seed=0,
    axes="YX",
    sigma=1e300,
    size=None,
)  # the kernel's length 4σ overflowed: ValueError (OverflowError for inf)
@example(
    method="median",
    auto=False,
    shape=(16, 16),
    dtype="float32",
    fill="random",
    seed=0,
    axes="YX",
    sigma=None,
    size=10**6,
)  # a (size × size) footprint was allocated: MemoryError
@example(
    method="nlm",
    auto=False,
    shape=(9, 1),
    dtype="float32",
    fill="random",
    seed=0,
    axes="YX",
    sigma=None,
    size=None,
)  # scikit-image squeezed the 1-pixel axis: ValueError on (9,) into (9, 1)
@example(
    method="gaussian",
    auto=True,
    shape=(1, 1),
    dtype="uint8",
    fill="random",
    seed=0,
    axes="YX",
    sigma=None,
    size=None,
)  # J-invariant tuning on an empty stride-4 grid: NaN losses
@example(
    method="bm3d",
    auto=False,
    shape=(8, 8),
    dtype="float32",
    fill="random",
    seed=0,
    axes="YX",
    sigma=None,
    size=None,
)  # the bm3d package crashed the process at 8×8 (segfault), ValueError below
def test_classical_denoisers_keep_shape_and_range_or_refuse(
    method, auto, shape, dtype, fill, seed, axes, sigma, size
):
    image = _array(shape, dtype, fill, seed)
    axes = _axes(axes, image.ndim)
    try:
        denoiser = make_classical(method, sigma=sigma, size=size, auto=auto)
    except PairlessError:
        wider_than_any_image = method == "gaussian" and sigma is not None and sigma > MAX_BLUR_PIXELS
        assert (
            not (sigma is None or 0 < sigma < np.inf)
            or not (size is None or size >= 1)
            or wider_than_any_image
        )
        return
    spatial = [n for a, n in zip(axes.upper(), shape) if a in "ZYX"]
    values = image.astype(np.float64)
    fits_float32 = _finite(image) and np.all(np.abs(values) <= np.finfo(np.float32).max)
    try:
        out = denoise_array(image, denoiser, axes=axes)
    except PairlessError:
        too_small_to_tune = auto and min(spatial, default=0) < 4
        too_wide = method == "median" and not auto and (size or 0) > 2 * max(spatial, default=0) + 1
        spread = float(values.max() - values.min()) if values.size and _finite(image) else 0.0
        beyond_range = (
            method == "nlm" and sigma is not None and sigma > 10 * max(spread, np.finfo(np.float32).tiny)
        )
        assert (
            method == "bm3d"
            or beyond_range
            or not fits_float32
            or not _valid_axes(axes, image.ndim, end_in_yx=False)
            or too_small_to_tune
            or too_wide
        )
        return
    assert fits_float32 and _valid_axes(axes, image.ndim, end_in_yx=False)
    assert method != "bm3d" or HAVE_BM3D
    assert out.shape == image.shape and out.dtype == np.float32
    assert np.all(np.isfinite(out))
    # every filter averages or picks neighbours: nothing outside the input's range, a constant stays put
    lo, hi = values.min(), values.max()
    tol = 1e-5 * max(abs(lo), abs(hi), 1.0)
    assert out.min() >= lo - tol and out.max() <= hi + tol
    if lo == hi:
        np.testing.assert_allclose(out, lo, rtol=1e-6, atol=0)


# ---------------------------------------------------------------- metrics


def _metric_or_error(call):
    """Run a metric with RuntimeWarnings as errors (a silent NaN/overflow is a bug); None on PairlessError."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        try:
            return call()
        except PairlessError:
            return None


@fuzz(200)
@given(
    shape=shapes(max_dims=3, max_side=12),
    dtypes=st.tuples(st.sampled_from(DTYPES), st.sampled_from(DTYPES)),
    fills=st.tuples(fills, fills),
    seeds=st.tuples(seeds, seeds),
    relation=st.sampled_from(["independent", "identical", "affine"]),
    data_range=st.floats(1e-3, 1e6) | st.sampled_from([1.0, 255.0, 65535.0, 1e-300, 1e300]),
    masked=st.booleans(),
)
@example(
    shape=(8, 8),
    dtypes=("float32", "float32"),
    fills=("random", "constant"),
    seeds=(1, 2),
    relation="independent",
    data_range=1.0,
    masked=False,
)  # SI-PSNR of a constant reference: 300 dB
@example(
    shape=(7, 7),
    dtypes=("int32", "int32"),
    fills=("constant", "constant"),
    seeds=(0, 255),
    relation="independent",
    data_range=1.0,
    masked=False,
)  # SSIM −2.99: variances of ±2e9 rounded
def test_metrics_are_finite_or_refuse(shape, dtypes, fills, seeds, relation, data_range, masked):
    reference = _array(shape, dtypes[1], fills[1], seeds[1])
    image = {
        "independent": lambda: _array(shape, dtypes[0], fills[0], seeds[0]),
        "identical": lambda: reference.copy(),
        "affine": lambda: 2.0 * reference.astype(np.float64) + 3.0,
    }
    with np.errstate(over="ignore"):
        image = image[relation]()
    mask = np.random.default_rng(seeds[0]).random(shape) < 0.7 if masked else None
    x, r = image.astype(np.float64), reference.astype(np.float64)
    # what the metrics can measure in float64: finite values within their documented limit
    finite = _finite(x) and _finite(r) and max(np.abs(x).max(), np.abs(r).max()) <= LIMIT
    if mask is not None:
        x, r = x[mask], r[mask]
    same = finite and x.size > 0 and np.array_equal(x, r)

    value = _metric_or_error(lambda: psnr(image, reference, data_range=data_range, mask=mask))
    if value is None:
        assert not finite or x.size == 0 or data_range > LIMIT
    else:
        assert value == np.inf if same else np.isfinite(value)

    value = _metric_or_error(lambda: nrmse(image, reference, normalization="min-max", mask=mask))
    if value is None:
        assert not finite or x.size == 0 or r.max() == r.min()
    else:
        assert np.isfinite(value) and value >= 0 and (value == 0) == same

    value = _metric_or_error(lambda: ssim(image, reference, data_range=data_range, mask=mask))
    peak = max(np.abs(image.astype(np.float64)).max(), np.abs(reference.astype(np.float64)).max())
    if value is None:  # values ≫ data_range drown the variances in rounding error; 1e-300 underflows C1, C2
        assert (
            not finite
            or x.size == 0
            or min(shape) < 7
            or mask is not None
            or data_range > LIMIT
            or data_range < 1e-100
            or peak > SSIM_VALUE_LIMIT * data_range
        )
    else:
        assert np.isfinite(value) and -1 - 1e-6 <= value <= 1 + 1e-6

    value = _metric_or_error(lambda: si_psnr(image, reference, data_range=data_range, mask=mask))
    if value is None:
        assert not finite or x.size == 0 or r.max() == r.min() or data_range > LIMIT
    else:
        assert r.max() > r.min(), "SI-PSNR against a constant reference fits any image perfectly"
        assert not np.isnan(value)
        if value == np.inf:  # only when the reference is exactly an affine function of the image
            a, b = np.polyfit(x.ravel(), r.ravel(), 1) if np.ptp(x) > 0 else (0.0, r.mean())
            assert np.allclose(a * x + b, r, rtol=0, atol=1e-9 * np.abs(r).max())


# ---------------------------------------------------------------- command line


def _write_input(folder: Path, name: str, array: np.ndarray, suffix: str) -> Path:
    """Write ``array`` with the format's own library (not pairless), as a user's file would be."""
    path = folder / f"{name}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".tif":
        import tifffile

        tifffile.imwrite(path, array, photometric="minisblack")
    elif suffix == ".npy":
        np.save(path, array)
    elif suffix == ".png":
        from PIL import Image as PILImage

        PILImage.fromarray(np.ascontiguousarray(array.reshape(array.shape[-2:]))).save(path)
    else:
        import nibabel as nib

        nib.save(nib.Nifti1Image(array.T, np.eye(4)), path)
    return path


@st.composite
def input_files(draw, min_side=1):
    """(shape, dtype, fill, seed, suffix) for one input file the formats' own libraries can write."""
    suffix = draw(st.sampled_from([".tif", ".npy", ".png", ".nii.gz"]))
    shape = draw(shapes(max_dims=4 if suffix != ".png" else 2, max_side=min_side + 7, min_side=min_side))
    dtypes = {".png": ("uint8", "uint16"), ".nii.gz": ("uint8", "int16", "int32", "float32", "float64")}
    dtype = draw(st.sampled_from(dtypes.get(suffix, DTYPES)))
    return shape, dtype, draw(fills), draw(seeds), suffix


def _check_exit(code: int, capsys, out: Path | None) -> tuple[str, str]:
    """Exit 0, or exit 2 with one ``error:`` line, no traceback and nothing written under ``out``.

    Returns (stdout, error line).
    """
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    lines = captured.err.strip().splitlines()
    # --hypothesis-show-statistics shows how often each path ran
    event(f"exit {code}" + (f": {lines[0].split(':', 2)[-1].split(';')[0][:70]}" if code else ""))
    if code == 0:
        return captured.out, ""
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    if out is not None:
        assert not out.exists() or _files(out) == [], f"a failed command wrote {_files(out)}"
    return "", lines[0]


@fuzz(100)
@given(
    spec=input_files(),
    cut=st.floats(0, 1),
    flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=4),
)
def test_read_image_of_a_truncated_or_corrupted_file_refuses_cleanly(spec, cut, flips):
    """Damaged files (cut short, bytes overwritten, headers included) are read or refused, never crash."""
    with tempfile.TemporaryDirectory() as tmp:
        path = _write_input(Path(tmp), "image", _array(*spec[:4]), spec[4])
        raw = bytearray(path.read_bytes())
        for where, value in flips:
            raw[int(where * (len(raw) - 1))] = value
        path.write_bytes(bytes(raw[: max(1, round(cut * len(raw)))]))
        try:
            image = read_image(path)
        except PairlessError:
            return
    assert image.data.size > 0 and _finite(image.data)


@fuzz(40)
@given(
    files=st.lists(input_files(), min_size=1, max_size=3),
    method=st.sampled_from(["gaussian", "median", "nlm"]),
    same_names=st.lists(st.booleans(), min_size=3, max_size=3),
    axes=st.none() | axes_choices().map(lambda c: _axes(c, 3)),
    option=st.none()
    | st.tuples(
        st.sampled_from(["--sigma", "--size"]),
        st.sampled_from(["2", "0", "-1", "nan", "inf", "1e300", "x", "1000000"]),
    ),
)
@example(  # in0/image.tif and in1/image.tif were both written to out/image.tif, the second over the first
    files=[((4, 4), "float32", "random", 0, ".tif"), ((4, 4), "float32", "random", 1, ".tif")],
    method="median",
    same_names=[True, True, True],
    axes=None,
    option=None,
)
@example(  # the second image (beyond float32) was refused only after the first one's output was written
    files=[((4, 4), "uint8", "random", 0, ".tif"), ((4, 4), "float64", "dtype-max", 0, ".npy")],
    method="median",
    same_names=[False, False, False],
    axes=None,
    option=None,
)
def test_cli_denoise_writes_every_output_or_nothing(capsys, files, method, same_names, axes, option):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        arrays = [_array(shape, dtype, fill, seed) for shape, dtype, fill, seed, _ in files]
        # each file in its own folder; same-named ones must not be written over one another in --out
        paths = [
            _write_input(tmp / f"in{i}", "image" if same else f"image{i}", array, spec[-1])
            for i, (same, array, spec) in enumerate(zip(same_names, arrays, files))
        ]
        out = tmp / "out"
        argv = ["denoise", method, *map(str, paths), "--out", str(out)] + (["--axes", axes] if axes else [])
        argv += list(option) if option else []
        _, error = _check_exit(main(argv), capsys, out)
        if error:
            return
        assert len({p.name for p in paths}) == len(paths), "two inputs were written to one output file"
        assert _files(out) == sorted(p.name for p in paths)
        for path, array in zip(paths, arrays):
            result = read_image(out / path.name)
            assert _finite(result.data)
            assert result.data.size == array.size


@fuzz(40)
@given(
    reference=input_files() | input_files(min_side=7),  # SSIM needs 7 pixels a side
    images=st.lists(input_files(), min_size=1, max_size=2),
    same_shape=st.sampled_from([True, True, True, False]),
    data_range=st.none() | st.floats(1e-3, 1e4),
    with_json=st.booleans(),
)
@example(  # a full-range int16 reference: max − min wrapped around to a negative "constant" range
    reference=((8, 9), "int16", "random", 0, ".tif"),
    images=[((8, 9), "int16", "random", 1, ".npy")],
    same_shape=True,
    data_range=None,
    with_json=True,
)
def test_cli_evaluate_scores_or_refuses(capsys, reference, images, same_shape, data_range, with_json):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ref_array = _array(*reference[:4])
        ref = _write_input(tmp, "reference", ref_array, reference[4])
        paths = []
        for i, (shape, dtype, fill, seed, suffix) in enumerate(images):
            shape = reference[0] if same_shape else shape
            if suffix == ".png":  # PNG holds only 2D
                suffix = ".npy"
            paths.append(_write_input(tmp, f"image{i}", _array(shape, dtype, fill, seed), suffix))
        target = tmp / "out" / "scores.json"
        argv = ["evaluate", "--reference", str(ref), "--images", *map(str, paths)]
        argv += ["--data-range", repr(data_range)] if data_range is not None else []
        argv += ["--json", str(target)] if with_json else []
        _, error = _check_exit(main(argv), capsys, tmp / "out")
        if "reference is constant" in error:
            assert ref_array.min() == ref_array.max(), error
        if error:
            return
        if with_json:
            rows = json.loads(target.read_text())["images"]
            assert len(rows) == len(paths)
            for row in rows:
                for key in ("psnr", "nrmse", "ssim", "si_psnr"):
                    value = row[key]  # strict JSON: an infinite PSNR is the string "inf"
                    assert isinstance(value, float) or value == "inf", (key, row)
                    assert not np.isnan(float(value)), (key, row)
