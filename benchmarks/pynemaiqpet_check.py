"""pairless's NEMA IQ recovery coefficients next to pynemaiqpet's, on the same DICOM files.

pynemaiqpet (KU Leuven's whole-body NEMA IQ analysis, 0.5.4) is an independent implementation of the
EARL RCmax and RCmean (A50: background-corrected 50 % isocontour) and needs pydicom < 3, so it runs in
its own environment: this script creates one (``python3 -m venv`` + ``pip install pynemaiqpet==0.5.4``)
in ``--venv``, or uses the interpreter given with ``--python``.

For each seed it simulates the NEMA IQ study as DICOM PET series (``pairless simulate pet --dicom``:
10 and 2 minutes), denoises the 2-minute series (``pairless denoise gaussian --sigma 1``), then scores
all three with pairless (``pairless.api.evaluate``, activities in kBq/mL against the BQML series)
and with pynemaiqpet (its CLI's calls: ``pymirc.fileio.DicomVolume`` and
``nema_wb.fit_WB_NEMA_sphere_profiles`` with its default fixed radii, RC = value / true activity in
Bq/mL).  pynemaiqpet segments the spheres itself and may miss one; its spheres are matched to
pairless's by centre (within 10 mm).  pynemaiqpet ignores 38 mm at each axial end, so the series need
more than 80 mm of slices: the default 61 slices are 124 mm.

Usage: ``python benchmarks/pynemaiqpet_check.py [--seeds 0 1 2] [--slices 61] [--python PATH | --venv DIR]
[--work DIR] [--json PATH]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PYNEMAIQPET = "pynemaiqpet==0.5.4"
TOLERANCE = 0.005
MATCH_MM = 10.0

# Runs under pynemaiqpet's interpreter: argv = output JSON, then series folders.  The calls are those of
# pynemaiqpet's CLI (pynemaiqpet_wb_nema_iq) without its plots.  Centres: NEMASubvols (what the fit calls,
# with the fit's defaults) gives each sphere's sub-volume, whose start plus the fitted centre is the sphere's
# centre in voxels of DicomVolume's array (x = column, y = row, z = slice).
CHILD = r"""
import json, os, sys, warnings
warnings.simplefilter("ignore")
import numpy as np
import matplotlib
matplotlib.use("Agg")
import pymirc.fileio as pmf
import pynemaiqpet.nema_wb as nw

out = {}
for series in sys.argv[2:]:
    try:
        dcm = pmf.DicomVolume(os.path.join(series, "*"))
        vol, vs = dcm.get_data(), np.asarray(dcm.voxsize, float)
        fits, table = nw.fit_WB_NEMA_sphere_profiles(
            vol, vs, sameSignal=True, Rfix=[18.5, 14.0, 11.0, 8.5, 6.5, 5.0], Sfix=None, dfix=1.5)
        boxes = nw.NEMASubvols(vol, vs, margin=9.0, bgSignal=float(table["background_mean"].iloc[0]))
        rows = []
        for fit, box, (_, r) in zip(fits, boxes, table.iterrows()):
            start = np.array([s.start for s in box], float)
            centre = start + np.asarray(fit.sphere_center, float) / vs
            rows.append({"max": float(r["max"]), "mean_a50": float(r["mean_a50"]),
                         "centre_xyz_vox": centre.tolist()})
        out[series] = {"spheres": rows, "voxsize_xyz": vs.tolist(), "shape_xyz": list(vol.shape)}
    except Exception as err:  # one series that pynemaiqpet cannot analyse is reported, not fatal
        out[series] = {"error": f"{type(err).__name__}: {err}"}
with open(sys.argv[1], "w") as f:
    json.dump(out, f)
"""


def pynemaiqpet_python(args) -> Path:
    """The interpreter with pynemaiqpet: ``--python``, or a venv made (once) in ``--venv``."""
    if args.python:
        return Path(args.python)
    python = Path(args.venv) / "bin" / "python"
    if not python.exists():
        subprocess.run(["python3", "-m", "venv", str(args.venv)], check=True)
    if subprocess.run([str(python), "-c", "import pynemaiqpet"], capture_output=True).returncode:
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", PYNEMAIQPET], check=True)
    return python


def simulate(seed: int, slices: int, work: Path) -> dict[str, Path]:
    """The seed's 10- and 2-minute DICOM series and the Gaussian-denoised 2-minute one, made with pairless."""
    out = work / f"seed{seed}"
    pairless = [sys.executable, "-m", "pairless"]
    if not (out / "pet_2min_dicom").exists():
        subprocess.run(
            [
                *pairless,
                "simulate",
                "pet",
                "--out",
                str(out),
                "--minutes",
                "2",
                "10",
                "--seed",
                str(seed),
                "--slices",
                str(slices),
                "--dicom",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    if not (out / "denoised" / "pet_2min_dicom").exists():
        subprocess.run(
            [
                *pairless,
                "denoise",
                "gaussian",
                str(out / "pet_2min_dicom"),
                "--sigma",
                "1",
                "--out",
                str(out / "denoised"),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return {
        "10 min": out / "pet_10min_dicom",
        "2 min": out / "pet_2min_dicom",
        "2 min gaussian": out / "denoised" / "pet_2min_dicom",
    }


def compare(ours: dict, theirs: dict, true_bq_ml: float) -> list[dict]:
    """One row per sphere: pairless's and pynemaiqpet's RCmax and RCmean, matched by centre."""
    rows = []
    voxel_zyx = np.array(theirs.get("voxsize_xyz", [1, 1, 1])[::-1])
    found = [(np.array(s["centre_xyz_vox"][::-1]) * voxel_zyx, s) for s in theirs.get("spheres", [])]
    for sphere in ours["spheres"]:
        centre = np.array(sphere["center_mm"])
        near = [s for c, s in found if np.linalg.norm(c - centre) <= MATCH_MM]
        row = {
            "sphere_mm": sphere["diameter_mm"],
            "pairless_rc_max": sphere["rc_max"],
            "pairless_rc_mean": sphere["rc_mean"],
        }
        if near:
            row["pynemaiqpet_rc_max"] = near[0]["max"] / true_bq_ml
            row["pynemaiqpet_rc_mean"] = near[0]["mean_a50"] / true_bq_ml
            row["d_rc_max"] = row["pairless_rc_max"] - row["pynemaiqpet_rc_max"]
            row["d_rc_mean"] = row["pairless_rc_mean"] - row["pynemaiqpet_rc_mean"]
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--slices", type=int, default=61)
    parser.add_argument("--python", help="an interpreter with pynemaiqpet 0.5.4 installed")
    parser.add_argument(
        "--venv",
        default=Path(tempfile.gettempdir()) / "pairless-pynemaiqpet-venv",
        help="where to create pynemaiqpet's environment when --python is not given",
    )
    parser.add_argument("--work", type=Path, help="folder for the series (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)

    from pairless import api

    started = time.perf_counter()
    python = pynemaiqpet_python(args)
    version = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('pynemaiqpet'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        series = {
            (seed, name): folder
            for seed in args.seeds
            for name, folder in simulate(seed, args.slices, work).items()
        }
        theirs_json = work / "pynemaiqpet.json"
        subprocess.run(
            [str(python), "-c", CHILD, str(theirs_json), *map(str, series.values())],
            check=True,
            stdout=subprocess.DEVNULL,  # pymirc's progress lines
        )
        theirs = json.loads(theirs_json.read_text())
        rows = []
        for (seed, name), folder in series.items():
            # the phantom's EARL filling: spheres 20, background 2 kBq/mL; the series hold Bq/mL
            ours = api.evaluate(
                [folder],
                phantom="nema",
                sphere_activity=20.0,
                background_activity=2.0,
                activity_units="kBq/mL",
            )[0]
            entry = theirs[str(folder)]
            if "error" in entry:
                print(f"seed {seed}, {name}: pynemaiqpet failed: {entry['error']}")
            rows += [{"seed": seed, "series": name, **r} for r in compare(ours, entry, 20_000.0)]

    def cell(v):
        return "—" if v is None else f"{v:.3f}"

    def signed(v):
        return "—" if v is None else f"{v:+.4f}"

    print(f"pairless vs pynemaiqpet {version} (RC = measured / 20 kBq/mL), {args.slices} slices")
    print(
        "| seed | series | sphere mm | RCmax pairless | RCmax pynemaiqpet | ΔRCmax | RCmean pairless "
        "| RCmean (A50) pynemaiqpet | ΔRCmean |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['seed']} | {r['series']} | {r['sphere_mm']:g} | {cell(r['pairless_rc_max'])} | "
            f"{cell(r.get('pynemaiqpet_rc_max'))} | {signed(r.get('d_rc_max'))} | "
            f"{cell(r['pairless_rc_mean'])} | {cell(r.get('pynemaiqpet_rc_mean'))} | "
            f"{signed(r.get('d_rc_mean'))} |"
        )
    both = [r for r in rows if "d_rc_max" in r]
    worst = max((max(abs(r["d_rc_max"]), abs(r["d_rc_mean"])) for r in both), default=float("nan"))
    print(
        f"\n{len(both)} of {len(rows)} spheres found by both; largest |difference| {worst:.4f} "
        f"(expected <= {TOLERANCE}); {time.perf_counter() - started:.0f} s"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"pynemaiqpet": version, "slices": args.slices, "rows": rows}, indent=1)
        )
    return 0 if both and worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
