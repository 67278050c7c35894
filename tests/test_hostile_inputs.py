"""Hostile and misleading inputs: each is refused in one ``error:`` line (exit 2, no traceback, no hang), the
inputs stay as they were and nothing is left at the target; inputs that are only odd are read as they are
and said so.  All files are a few kB at most, whatever size their headers state."""

import hashlib
import os
import signal
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile

from pairless.cli import main
from pairless.errors import PairlessError
from pairless.io import inspect_image, read_image

# ---------------------------------------------------------------- hostile files, built byte by byte


def tiff_declaring(path: Path, width: int, height: int, *, strip: bytes = b"\0" * 4, strips: int = 1) -> Path:
    """A little-endian TIFF of ``width`` × ``height`` float32 (or zlib uint8 with ``strips`` > 1) whose every
    strip is the one ``strip`` stored: a 150-byte file can state 37 GiB, a few kB a real zlib bomb."""
    compressed = strips > 1
    bits, sample_format, compression = (8, 1, 8) if compressed else (32, 3, 1)
    tags = 10
    ifd_end = 8 + 2 + 12 * tags + 4
    arrays = ifd_end  # the strip offsets and byte counts, when there are several
    data = arrays + (8 * strips if strips > 1 else 0)

    def entry(tag: int, kind: int, count: int, value: int) -> bytes:
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        return struct.pack("<HHI", tag, kind, count) + packed

    entries = [
        entry(256, 4, 1, width),
        entry(257, 4, 1, height),
        entry(258, 3, 1, bits),
        entry(259, 3, 1, compression),
        entry(262, 3, 1, 1),
        entry(273, 4, strips, arrays if strips > 1 else data),
        entry(277, 3, 1, 1),
        entry(278, 4, 1, -(-height // strips)),
        entry(279, 4, strips, arrays + 4 * strips if strips > 1 else len(strip)),
        entry(339, 3, 1, sample_format),
    ]
    body = struct.pack("<2sHI", b"II", 42, 8) + struct.pack("<H", tags) + b"".join(entries) + b"\0" * 4
    if strips > 1:
        body += struct.pack(f"<{strips}I", *[data] * strips) + struct.pack(
            f"<{strips}I", *[len(strip)] * strips
        )
    path.write_bytes(body + strip)
    return path


def zlib_bomb(path: Path, side: int = 40000, strips: int = 40) -> Path:
    """A real zlib TIFF of ``side``² zeros, every strip the same compressed block (a few kB on disk)."""
    block = zlib.compress(b"\0" * (side * (side // strips)), 9)
    return tiff_declaring(path, side, side, strip=block, strips=strips)


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A gray 8-bit PNG stating ``width`` × ``height`` whose pixel data is one row."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (width + 1))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def npy_declaring(path: Path, shape: tuple[int, ...]) -> Path:
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}".encode()
    header += b" " * (63 - len(header) % 64) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * 16)
    return path


def nifti_with_sform(path: Path, rows: np.ndarray) -> Path:
    """An 8×8×4 NIfTI-1 whose sform rows (3×4) are patched into the header bytes (nibabel refuses to write
    NaN or singular ones)."""
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.arange(256, dtype=np.float32).reshape(8, 8, 4), np.eye(4)), path)
    raw = bytearray(path.read_bytes())
    struct.pack_into("<hh", raw, 252, 0, 1)  # qform_code 0, sform_code 1: the sform is the geometry
    struct.pack_into("<12f", raw, 280, *np.asarray(rows, np.float32).ravel())
    path.write_bytes(bytes(raw))
    return path


def dicom_series(folder: Path, positions, thickness) -> Path:
    """A series of 8×8 slices at z = ``positions`` mm, ``thickness`` mm thick (one value or one per slice)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir()
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    for k, z in enumerate(positions):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientName, ds.PatientID = "OT", "hostile", "hostile"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [0, 0, z]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.5, 0.5]
        ds.SliceThickness = thickness[k] if isinstance(thickness, list) else thickness
        ds.Rows = ds.Columns = 8
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation = 15, 0
        ds.PixelData = (np.arange(64, dtype=np.uint16) * (k + 1)).tobytes()
        ds.save_as(folder / f"{k:03d}.dcm", enforce_file_format=True)
    return folder


# ---------------------------------------------------------------- how a refusal must look


@pytest.fixture(autouse=True)
def no_hang():
    """A FIFO read by mistake would block forever: fail the test after 60 s instead."""

    def expire(signum, frame):
        raise TimeoutError("the command hung")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def digests(paths) -> dict:
    found = {}
    for path in paths:
        path = Path(path)
        if path.is_dir():
            found.update(digests(sorted(path.iterdir())))
        elif path.is_file():
            found[path] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def refused(argv: list, capsys, *, inputs=(), target: Path | None = None) -> str:
    """Run ``pairless argv``; assert the one-line refusal and return that line."""
    before = digests(inputs)
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert digests(inputs) == before
    if target is not None:
        assert not target.exists() or not any(target.iterdir()), sorted(target.iterdir())
    return lines[0]


# ---------------------------------------------------------------- limits before allocation


@pytest.mark.parametrize("command", ["denoise", "evaluate-images", "evaluate-reference", "fit"])
@pytest.mark.parametrize("kind", ["tiff", "npy", "png"])
def test_a_header_stating_gigabytes_is_refused_before_anything_is_allocated(tmp_path, capsys, command, kind):
    small = tmp_path / "small.tif"
    tifffile.imwrite(small, np.zeros((8, 8), np.float32))
    huge = {
        "tiff": lambda: tiff_declaring(tmp_path / "huge.tif", 100000, 100000),  # 138 bytes, 37 GiB
        "npy": lambda: npy_declaring(tmp_path / "huge.npy", (100000, 100000)),
        "png": lambda: png_declaring(tmp_path / "huge.png", 40000, 40000),
    }[kind]()
    assert huge.stat().st_size < 200
    out = tmp_path / "out"
    argv = {
        "denoise": ["denoise", "median", huge, "--out", out, "--size", "3"],
        "evaluate-images": ["evaluate", "--reference", small, "--images", huge, "--json", out / "s.json"],
        "evaluate-reference": ["evaluate", "--reference", huge, "--images", small, "--json", out / "s.json"],
        "fit": ["fit", "ne2ne", huge, "--out", out],
    }[command]
    line = refused(argv, capsys, inputs=[small, huge], target=out)
    assert str(huge) in line and "more than the limit of 1,073,741,824" in line and "--max-pixels" in line


def test_a_real_zlib_bomb_is_refused_without_decoding_it(tmp_path, capsys, monkeypatch):
    bomb = zlib_bomb(tmp_path / "bomb.tif")  # 40000² from a few kB
    assert bomb.stat().st_size < 100_000
    with tifffile.TiffFile(bomb) as tif:  # a genuine zlib image
        assert tif.pages[0].shape == (40000, 40000) and tif.pages[0].compression == 8

    def decoded(*args, **kwargs):
        raise AssertionError("the bomb was decoded")

    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", decoded)
    for argv in (
        ["denoise", "median", bomb, "--out", tmp_path / "out", "--size", "3"],
        ["fit", "n2v", bomb, "--out", tmp_path / "out"],
    ):
        line = refused(argv, capsys, inputs=[bomb], target=tmp_path / "out")
        assert "40000 × 40000" in line and "--max-pixels 1600000000" in line


def test_max_pixels_sets_the_limit_on_every_command_and_in_the_api(tmp_path, capsys):
    import pairless

    image = tmp_path / "a.tif"
    tifffile.imwrite(image, np.random.default_rng(0).random((16, 16)).astype(np.float32))
    out = tmp_path / "out"
    for argv in (
        ["denoise", "median", image, "--out", out, "--size", "3", "--max-pixels", "255"],
        ["evaluate", "--reference", image, "--images", image, "--max-pixels", "255"],
        ["fit", "ne2ne", image, "--out", out, "--max-pixels", "255"],
        ["fit", "n2n", "--pairs", image, image, "--out", out, "--max-pixels", "255"],
    ):
        assert "16 × 16 values (256" in refused(argv, capsys, inputs=[image], target=out)
    assert "≥ 1" in refused(["denoise", "median", image, "--out", out, "--max-pixels", "0"], capsys)
    assert (
        main(["denoise", "median", str(image), "--out", str(out), "--size", "3", "--max-pixels", "256"]) == 0
    )
    with pytest.raises(PairlessError, match="more than the limit of 255"):
        pairless.evaluate([image], reference=image, max_pixels=255)
    with pytest.raises(PairlessError, match="more than the limit of 255"):
        pairless.denoise([image], "median", out=tmp_path / "api", max_pixels=255, size=3)
    with pytest.raises(PairlessError, match="more than the limit of 255"):
        pairless.fit("ne2ne", [image], out=tmp_path / "model", max_pixels=255)
    assert not (tmp_path / "api").exists() and not (tmp_path / "model").exists()


def write_every_format(folder: Path) -> list[Path]:
    import nibabel as nib
    from PIL import Image as PILImage

    data = np.arange(256, dtype=np.uint16).reshape(16, 16)
    tifffile.imwrite(folder / "a.tif", data)
    PILImage.fromarray(data.astype(np.uint8)).save(folder / "a.png")
    np.save(folder / "a.npy", data)
    nib.save(nib.Nifti1Image(data[:, :, None].astype(np.float32), np.eye(4)), folder / "a.nii.gz")
    return [
        folder / "a.tif",
        folder / "a.png",
        folder / "a.npy",
        folder / "a.nii.gz",
        dicom_series(folder / "series", [0, 1, 2, 3], 1.0),
    ]


def test_every_reader_checks_the_limit_from_the_header(tmp_path):
    from pairless.io.limits import DEFAULT_MAX_PIXELS, use_max_pixels

    for path in write_every_format(tmp_path):
        with use_max_pixels(255):
            with pytest.raises(PairlessError, match=f"{path.name}: its header states .* more than the limit"):
                inspect_image(path)
            with pytest.raises(PairlessError, match="more than the limit of 255"):
                read_image(path)
        assert read_image(path).data.size == 256
    assert DEFAULT_MAX_PIXELS == 2**30


def test_png_uses_our_limit_not_pillows(tmp_path):
    from pairless.io.limits import use_max_pixels

    # 100 M pixels: Pillow warns (DecompressionBombWarning); 225 M: Pillow refuses; both are under 2**30
    for side in (10000, 15000):
        png = png_declaring(tmp_path / f"{side}.png", side, side)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert inspect_image(png).shape == (side, side)
        with use_max_pixels(50_000_000), pytest.raises(PairlessError, match="--max-pixels"):
            inspect_image(png)


# ---------------------------------------------------------------- BMZ packages


def test_a_package_whose_rdf_unpacks_too_large_is_refused_unread(tmp_path, capsys, monkeypatch):
    package = tmp_path / "bomb.zip"
    with zipfile.ZipFile(package, "w", zipfile.ZIP_DEFLATED) as archive:  # just over the 1 MiB cap
        archive.writestr("rdf.yaml", "type: model\nformat_version: 0.5.4\n#" + " " * 2**20 + "\n")
    assert package.stat().st_size < 10_000

    def parsed(*args, **kwargs):
        raise AssertionError("the rdf was parsed")

    monkeypatch.setattr("yaml.safe_load", parsed)
    image = tmp_path / "a.tif"
    tifffile.imwrite(image, np.zeros((8, 8), np.float32))
    line = refused(
        ["denoise", package, image, "--out", tmp_path / "out"],
        capsys,
        inputs=[package, image],
        target=tmp_path / "out",
    )
    assert "rdf.yaml" in line and "would unpack to 1,048,6" in line


def test_a_zip_member_larger_than_it_declares_is_not_unpacked(tmp_path):
    import tracemalloc

    from pairless.bmz.load import read_bmz

    package = tmp_path / "liar.zip"
    with zipfile.ZipFile(package, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("rdf.yaml", "#" * 20_000_000)
    raw = bytearray(package.read_bytes())
    struct.pack_into("<I", raw, raw.rfind(b"PK\x01\x02") + 24, 100)  # the central directory's size
    struct.pack_into("<I", raw, raw.find(b"PK\x03\x04") + 22, 100)  # the local header's
    package.write_bytes(bytes(raw))
    tracemalloc.start()
    try:
        with pytest.raises(PairlessError, match="corrupt zip"):
            read_bmz(package)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000  # not the 20 MB the member really holds


# ---------------------------------------------------------------- not regular files


@pytest.fixture
def fifo(tmp_path):
    def make(name: str) -> Path:
        path = tmp_path / name
        os.mkfifo(path)
        return path

    return make


def test_a_fifo_is_refused_as_every_kind_of_input(tmp_path, capsys, fifo):
    image = tmp_path / "a.tif"
    tifffile.imwrite(image, np.zeros((8, 8), np.float32))
    pipe, config = fifo("x.tif"), fifo("x.yaml")
    out = tmp_path / "out"
    for argv in (
        ["denoise", "median", pipe, "--out", out],
        ["evaluate", "--reference", image, "--images", pipe],
        ["evaluate", "--reference", pipe, "--images", image],
        ["evaluate", "--reference", image, "--images", image, "--mask", pipe],
        ["fit", "ne2ne", pipe, "--out", out],
        ["fit", "ne2ne", image, "--out", out, "--config", config],
    ):
        line = refused(argv, capsys, inputs=[image], target=out)
        assert "is a named pipe (FIFO)" in line
    no_suffix = fifo("scan")  # would be sniffed for a DICOM preamble
    assert "named pipe" in refused(["denoise", "median", no_suffix, "--out", out], capsys, target=out)


def test_a_device_and_a_model_folder_of_pipes_are_refused(tmp_path, capsys):
    device = tmp_path / "zero.npy"
    device.symlink_to("/dev/zero")
    out = tmp_path / "out"
    assert "character device" in refused(["denoise", "median", device, "--out", out], capsys, target=out)
    model = tmp_path / "model"
    model.mkdir()
    for name in ("config.yaml", "weights.safetensors"):
        os.mkfifo(model / name)
    image = tmp_path / "a.tif"
    tifffile.imwrite(image, np.zeros((8, 8), np.float32))
    refused(["denoise", model, image, "--out", out], capsys, inputs=[image], target=out)


# ---------------------------------------------------------------- inputs that are not what they seem


def test_a_tiff_with_two_generic_axes_needs_axes(tmp_path, capsys):
    data = np.random.default_rng(0).random((2, 3, 4, 8, 8)).astype(np.float32)
    tif = tmp_path / "qq.tif"
    # tifffile names the axes QQSYX (S: 4 samples per pixel); pairless used to merge them into SCYX
    tifffile.imwrite(tif, data, metadata={"axes": "QQSYX"}, photometric="minisblack", planarconfig="separate")
    out = tmp_path / "out"
    line = refused(["denoise", "median", tif, "--out", out, "--size", "3"], capsys, inputs=[tif], target=out)
    assert "'SSCYX'" in line and "--axes" in line
    frames = tmp_path / "iq.tif"
    tifffile.imwrite(frames, data[0], metadata={"axes": "IQYX"}, photometric="minisblack")
    assert "--axes" in refused(["fit", "ne2ne", frames, "--out", out], capsys, inputs=[frames], target=out)
    assert main(["denoise", "median", str(tif), "--out", str(out), "--size", "3", "--axes", "TZCYX"]) == 0
    back = read_image(out / "qq.tif")
    assert back.axes == "TZCYX" and back.data.shape == data.shape


def test_a_palette_png_is_read_as_its_indices(tmp_path):
    from PIL import Image as PILImage

    indices = (np.arange(48).reshape(6, 8) * 5 % 256).astype(np.uint8)
    image = PILImage.fromarray(indices, mode="P")
    image.putpalette(list(np.random.default_rng(0).integers(0, 256, 768, dtype=np.uint8)))  # a colour table
    image.save(tmp_path / "p.png")
    assert PILImage.open(tmp_path / "p.png").mode == "P"
    back = read_image(tmp_path / "p.png")
    assert back.axes == "YX" and back.data.dtype == np.uint8
    np.testing.assert_array_equal(back.data, indices)
    info = inspect_image(tmp_path / "p.png")
    assert info.shape == (6, 8) and info.axes == "YX"


@pytest.mark.parametrize("flaw, words", [("nan", "holds NaN/Inf"), ("singular", "is singular")])
def test_a_nifti_without_geometry_is_refused_on_reading(tmp_path, capsys, flaw, words):
    rows = np.eye(4)[:3].copy()
    if flaw == "nan":
        rows[0, 0] = np.nan
    else:
        rows[2, 2] = 0.0  # every slice at one place
    path = nifti_with_sform(tmp_path / "v.nii", rows)
    out = tmp_path / "out"
    for argv in (
        ["denoise", "median", path, "--out", out, "--size", "3"],
        ["evaluate", "--reference", path, "--images", path],
    ):
        line = refused(argv, capsys, inputs=[path], target=out)
        assert "v.nii: its affine" in line and words in line


def test_a_dicom_series_with_a_gap_or_mixed_thickness_is_named_and_keeps_its_thickness(tmp_path, capsys):
    import pydicom

    gap = dicom_series(tmp_path / "gap", [0, 2, 4, 8, 10], 2.0)
    mixed = dicom_series(tmp_path / "mixed", [0, 2, 4, 6], [2.0, 2.0, 3.0, 2.0])
    out = tmp_path / "out"
    assert main(["denoise", "median", str(gap), str(mixed), "--out", str(out), "--size", "3"]) == 0
    err = capsys.readouterr().err
    assert "not evenly spaced (002.dcm to 003.dcm 4 mm; the others 2 mm)" in err
    assert "differ in thickness (002.dcm 3 mm; the others 2 mm)" in err
    assert "Traceback" not in err

    def thickness(folder):
        return [float(pydicom.dcmread(f).SliceThickness) for f in sorted(folder.iterdir())]

    assert thickness(out / "mixed") == [2.0, 2.0, 3.0, 2.0]
    assert thickness(out / "gap") == [2.0] * 5
    even = dicom_series(tmp_path / "even", [0, 2.5, 5, 7.5], 2.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_image(even)
