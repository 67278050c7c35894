"""Denoising on a Dask cluster: the same output as one process, whatever dies, and nothing half-written.

One ``LocalCluster`` of two worker processes (one thread each) serves the whole module; the tests that
kill a worker or a client are marked slow but run in the default suite.
"""

import functools
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import zarr

from pairless import api
from pairless.cli import main
from pairless.denoiser import Denoiser
from pairless.errors import PairlessError
from pairless.inference.chunked import denoise_chunked
from pairless.inference.distributed import STAGING_SUFFIX, connect, denoise_distributed

distributed = pytest.importorskip("distributed", reason="needs the 'distributed' extra (dask.distributed)")

pytestmark = pytest.mark.usefixtures("one_thread")

GAUSSIAN = functools.partial(api.load, "gaussian", sigma=1.5)  # support 4σ = 6 voxels < the halo


@pytest.fixture(scope="module")
def client():
    with connect("local:2") as client:
        yield client


def _zarr(path, data, *, chunks, **attributes):
    array = zarr.create_array(
        store=str(path), shape=data.shape, chunks=chunks, dtype=data.dtype, attributes=attributes
    )
    array[:] = data
    return path


@pytest.fixture
def volume(tmp_path):
    data = np.random.default_rng(0).normal(100, 20, (21, 45, 38)).astype(np.float32)
    return _zarr(tmp_path / "v.zarr", data, chunks=(7, 20, 20), axes="ZYX", voxel_size=[2.0, 1.0, 1.0])


def _reference(source, tmp_path, loader=GAUSSIAN, **options):
    return zarr.open(str(denoise_chunked(source, tmp_path / "ref" / source.name, loader(), **options)))[:]


def _same_files_only(folder, names):
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)  # no staging folder, no temporary


def test_the_cluster_writes_what_one_process_writes(tmp_path, volume, client):
    target = denoise_distributed(
        volume, tmp_path / "out" / "v.zarr", GAUSSIAN, scheduler=client, block=8, halo=7, batch=3
    )
    out = zarr.open(str(target), mode="r")
    assert out.chunks == (8, 8, 8) and dict(out.attrs) == {"voxel_size": [2.0, 1.0, 1.0], "axes": "ZYX"}
    np.testing.assert_array_equal(out[:], _reference(volume, tmp_path, block=8, halo=7))
    _same_files_only(tmp_path / "out", ["v.zarr"])


def test_an_ome_zarr_image_gets_its_pyramid_from_tasks_of_their_own(tmp_path, client):
    pytest.importorskip("ome_zarr")
    from ome_zarr.format import FormatV05
    from ome_zarr.writer import write_multiscale

    data = np.random.default_rng(1).normal(100, 10, (2, 3, 150, 140)).astype(np.float32)
    group = zarr.open_group(str(tmp_path / "img.zarr"), mode="w", zarr_format=3)
    axes = [{"name": "c", "type": "channel"}] + [
        {"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"
    ]
    write_multiscale(
        [data],
        group,
        axes=axes,
        fmt=FormatV05(),
        coordinate_transformations=[[{"type": "scale", "scale": [1, 2, 0.5, 0.5]}]],
    )
    source = tmp_path / "img.zarr"
    seen = []
    # the file `dask scheduler --scheduler-file` writes; by hand, because Client.write_scheduler_file fails
    # (tuple keys in scheduler_info's metrics) once a shared client has run tasks
    (tmp_path / "scheduler.json").write_text(
        json.dumps({"type": "Scheduler", "address": client.scheduler.address})
    )
    denoise_distributed(
        source,
        tmp_path / "out" / "img.zarr",
        GAUSSIAN,
        scheduler=str(tmp_path / "scheduler.json"),
        block=64,
        halo=7,
        on_block=seen.append,
    )
    reference = denoise_chunked(source, tmp_path / "ref.zarr", GAUSSIAN(), block=64, halo=7)
    ours, theirs = zarr.open_group(str(tmp_path / "out" / "img.zarr")), zarr.open_group(str(reference))
    assert dict(ours.attrs) == dict(theirs.attrs)  # axes, scale, pyramid, provenance
    levels = sorted(ours.array_keys())
    assert levels == sorted(theirs.array_keys()) == ["0", "1"]
    for level in levels:
        np.testing.assert_array_equal(ours[level][:], theirs[level][:])
    assert sum(r["level"] == 0 for r in seen) == 2 * 3 * 3 and sum(r["level"] == 1 for r in seen) == 2 * 2 * 2


class _KillOnce(Denoiser):
    """A Gaussian that SIGKILLs its worker process in the middle of its ``at``-th block, once per test."""

    def __init__(self, marker, at):
        super().__init__()
        self.inner, self.marker, self.at, self.calls = GAUSSIAN(), marker, at, 0
        self.provenance = self.inner.provenance

    def forward(self, y, sigma=None):
        self.calls += 1
        if self.calls == self.at and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner(y, sigma=sigma)


def _kill_once(marker, at):
    return _KillOnce(marker, at)


@pytest.mark.slow
def test_a_worker_killed_mid_block_changes_nothing_in_the_output(tmp_path, volume, client):
    marker = tmp_path / "killed"
    denoise_distributed(
        volume,
        tmp_path / "out" / "v.zarr",
        functools.partial(_kill_once, str(marker), 3),
        scheduler=client,
        block=8,
        halo=7,
    )
    assert marker.exists()  # a worker did die in its third block (its nanny starts a new one)
    out = zarr.open(str(tmp_path / "out" / "v.zarr"), mode="r")[:]
    np.testing.assert_array_equal(out, _reference(volume, tmp_path, block=8, halo=7))
    _same_files_only(tmp_path / "out", ["v.zarr"])
    leftovers = [p for p in (tmp_path / "out" / "v.zarr").rglob("*") if p.name.endswith(".partial")]
    assert leftovers == []


CLIENT = """
import functools, sys, time
from pairless import api
from pairless.inference.distributed import denoise_distributed
source, target, address = sys.argv[1:4]
denoise_distributed(source, target, functools.partial(api.load, "gaussian", sigma=1.5), scheduler=address,
                    block=8, halo=7, batch=2, on_block=lambda result: time.sleep(0.15))
"""


@pytest.mark.slow
def test_resume_after_the_client_is_killed_does_only_the_blocks_left(tmp_path, volume, client):
    target = tmp_path / "out" / "v.zarr"
    done = tmp_path / "out" / f".v.zarr{STAGING_SUFFIX}" / "done"
    child = subprocess.Popen(
        [sys.executable, "-c", CLIENT, str(volume), str(target), client.scheduler.address],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while not (done.exists() and done.read_text().count("\n") >= 5):
            assert child.poll() is None and time.monotonic() < deadline, (
                "the client ended before it was killed"
            )
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert not target.exists()
    recorded = done.read_text().count("\n")
    total = 3 * 6 * 5
    assert 5 <= recorded < total
    # the dead client's tasks are released once the scheduler notices, and those running end; then
    # count what the resumed run runs
    deadline = time.monotonic() + 30
    while client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) or any(
        client.run(lambda dask_worker: dask_worker.state.executing_count).values()
    ):
        assert time.monotonic() < deadline
        time.sleep(0.1)

    with pytest.raises(PairlessError, match="another halo"):
        denoise_distributed(volume, target, GAUSSIAN, scheduler=client, block=8, halo=6, resume=True)
    said, seen = [], []
    with distributed.get_task_stream(client) as stream:
        denoise_distributed(
            volume,
            target,
            GAUSSIAN,
            scheduler=client,
            block=8,
            halo=7,
            resume=True,
            echo=said.append,
            on_block=seen.append,
        )
    ran = [t for t in stream.data if str(t["key"]).startswith("pairless-")]
    assert len(seen) == len(ran) == total - recorded
    assert said == [
        f"resuming {target}: {recorded} of {total} tasks were done; running the other {total - recorded}"
    ]
    np.testing.assert_array_equal(zarr.open(str(target))[:], _reference(volume, tmp_path, block=8, halo=7))
    _same_files_only(tmp_path / "out", ["v.zarr"])


def _one_line(err):
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_a_bad_scheduler_address_gives_one_line_and_writes_nothing(tmp_path, volume):
    out = tmp_path / "out"
    with pytest.raises(PairlessError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9") as err:
        denoise_distributed(volume, out / "v.zarr", GAUSSIAN, scheduler="tcp://127.0.0.1:9", timeout=1)
    _one_line(err)
    for bad in ("no-such-scheduler-file.json", "local:0"):
        with pytest.raises(PairlessError, match="scheduler") as err:
            denoise_distributed(volume, out / "v.zarr", GAUSSIAN, scheduler=bad)
        _one_line(err)
    assert not out.exists()


def _deny(prefix):
    """On a worker: zarr cannot open anything under ``prefix`` (storage this worker cannot read)."""
    import zarr

    original = zarr.open_array

    def refuse(store, *args, **kwargs):
        if str(store).startswith(prefix):
            raise PermissionError(13, "Permission denied", str(store))
        return original(store, *args, **kwargs)

    refuse.original = original
    zarr.open_array = refuse


def _allow():
    import zarr

    zarr.open_array = getattr(zarr.open_array, "original", zarr.open_array)


def test_an_input_a_worker_cannot_read_names_the_worker_and_the_path(tmp_path, volume, client):
    worker = sorted(client.nthreads())[-1]
    client.run(_deny, str(volume), workers=[worker])
    try:
        with pytest.raises(PairlessError) as err:
            denoise_distributed(volume, tmp_path / "out" / "v.zarr", GAUSSIAN, scheduler=client)
    finally:
        client.run(_allow, workers=[worker])
    message = _one_line(err)
    assert f"worker {worker} cannot read {volume.resolve()}" in message and "Permission denied" in message
    assert not (tmp_path / "out").exists()


def test_a_model_folder_missing_on_a_worker_gives_one_line(tmp_path, volume, client):
    missing = functools.partial(api.load, str(tmp_path / "models" / "gone"))  # the client never loads it
    with pytest.raises(PairlessError, match=r"worker tcp://\S+ cannot load the model") as err:
        denoise_distributed(volume, tmp_path / "out" / "v.zarr", missing, scheduler=client)
    assert "gone" in _one_line(err)
    assert not (tmp_path / "out").exists()


def test_the_api_sends_a_recipe_not_a_model_and_only_zarr_volumes(tmp_path, volume, client):
    address = client.scheduler.address
    with pytest.raises(PairlessError, match="load the model themselves"):
        api.denoise([volume], torch.nn.Identity(), out=tmp_path / "o", scheduler=address)
    np.save(tmp_path / "a.npy", np.zeros((8, 8), np.float32))
    with pytest.raises(PairlessError, match=r"\.zarr volumes"):
        api.denoise([tmp_path / "a.npy"], "gaussian", out=tmp_path / "o", scheduler=address)
    with pytest.raises(PairlessError, match="pass scheduler"):
        api.denoise([volume], "gaussian", out=tmp_path / "o", resume=True)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_trained_model_runs_on_the_cluster_from_the_command_line(tmp_path, client, capsys):
    rng = np.random.default_rng(2)
    image = rng.normal(10, 3, (4, 70, 60)).astype(np.float32)
    model = tmp_path / "n2v"
    api.fit(
        "n2v",
        [image[0], image[1]],
        out=model,
        axes="YX",
        steps=4,
        batch_size=2,
        patch_size=16,
        depth=1,
        filters=4,
        precision="32-true",
        progress=False,
    )
    source = _zarr(tmp_path / "s.zarr", image, chunks=(2, 32, 32), axes="ZYX")
    api.denoise([source], str(model), out=tmp_path / "one", block=32, halo=16, echo=lambda line: None)
    expected = zarr.open(str(tmp_path / "one" / "s.zarr"))[:]
    # the command line loads the model, and api.denoise(..., scheduler=...) sends the workers its recipe
    args = [
        "denoise",
        str(model),
        str(source),
        "--out",
        str(tmp_path / "cli"),
        "--block",
        "32",
        "--halo",
        "16",
    ]
    assert main([*args, "--scheduler", client.scheduler.address]) == 0
    np.testing.assert_array_equal(zarr.open(str(tmp_path / "cli" / "s.zarr"))[:], expected)
    assert f"-> {tmp_path / 'cli' / 's.zarr'}" in capsys.readouterr().out
