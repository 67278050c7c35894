"""Block-wise denoising of a zarr or OME-Zarr volume on a Dask cluster: resumable, and nothing is lost.

:func:`denoise_distributed` runs :func:`pairless.inference.chunked.denoise_chunked`'s per-block code
(:func:`~pairless.inference.chunked.denoise_block`) as tasks of Dask's distributed scheduler: a
``LocalCluster`` on one machine (``local:N``), any running scheduler (``tcp://HOST:PORT``, or the
scheduler file that ``dask scheduler --scheduler-file`` and dask-jobqueue write).  The blocks, the
output's chunks and the result are those of the single-process path, so both give the same array.

**The model travels as a recipe, never as weights in the graph.**  This module sits in the inference
layer and may not import the API that knows how to load a model folder or a BioImage Model Zoo
package, so the caller passes ``load_denoiser``: a picklable callable without arguments that returns
the denoiser (:mod:`pairless.api` passes ``functools.partial(pairless.api.load, "/abs/model", ...)``,
which pickles by reference to the function plus its arguments, a few hundred bytes).  Each worker
process calls it once, with the same safe loader as everywhere else (safetensors weights into
pairless's own network; nothing from a model file is executed), and keeps the denoiser in a small
per-process cache keyed by ``model_key`` (the SHA-256 of the weights, which the API reads from the
model) together with the recipe; every task of the run finds it there.  A worker that joins or is
restarted mid-run loads it at its first task.

**Threads.**  A worker process runs as many blocks at once as it has Dask threads; each block's
torch gets ``threads`` threads (default: the cores the process may use divided by the Dask threads
of all workers on that host), so torch and Dask together use each core once.  ``local:N`` starts N
worker processes of one Dask thread each; Dask's nanny starts them with ``OMP_NUM_THREADS=1`` and
:func:`torch.set_num_threads` is set on the thread that runs each block.

**What is written where.**  Before anything is computed, every worker connected at the start loads
the model and opens the input: a worker that cannot (the model folder or the input missing on its
storage, pairless not installed) is named in one line, and nothing is written.  The output is then
created whole, with its final chunking, in a staging folder beside the target::

    .<target name>.distributed.part/
        run.json    what the run computes (input, shape, blocks, halo, model key): a resume must match it
        client      host and pid of the client driving the run (two live clients never share a target)
        done        the completion record: one line "level index" per finished task
        data/       the output being written (a zarr array, or an OME-Zarr image with its pyramid levels)

Each task reads one block plus its halo, denoises it, writes exactly the block's interior (one whole
chunk: no two tasks write one chunk), flushes that chunk to disk and returns; only then does the
client append the block to ``done``.  OME-Zarr pyramid levels are tasks of their own (one per chunk
of a level, from the level before), after level 0.  Tasks are submitted in a bounded window
(``batch``), so the client's memory does not grow with the volume.  When every task is recorded, the
data folder is renamed onto the target (the only write under the target's name) and the staging
folder removed.

**Faults.**  A worker killed mid-block (even SIGKILL) has its tasks re-run elsewhere by the scheduler;
a block writes the same bytes whichever worker runs it, and zarr writes each chunk to a temporary
file renamed into place, so the output equals that of a run without the fault (a re-run block also
removes the temporary file the killed write left).  A client that dies leaves the staging folder:
``resume=True`` (``--resume``) checks ``run.json`` against the new request and runs only the tasks not
in ``done``; without it the run starts over.  Any failure after the staging folder exists keeps it
for a resume; the target is never written until the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from pairless.denoiser import Denoiser
from pairless.errors import PairlessError
from pairless.inference.chunked import (
    BlockPlan,
    _ngff_source,
    _open_source,
    _progress,
    _provenance,
    check_denoiser,
    check_request,
    create_output,
    denoise_block,
    plan_blocks,
)

STAGING_SUFFIX = ".distributed.part"
RUN_FILE, CLIENT_FILE, DONE_FILE, DATA = "run.json", "client", "done", "data"
MODELS_KEPT = 2  # denoisers cached per worker process: a long-lived cluster serves run after run


def denoise_distributed(
    source: str | os.PathLike,
    target: str | os.PathLike,
    load_denoiser: Callable[[], Denoiser],
    *,
    scheduler="local",
    model_key: str | None = None,
    axes: str | None = None,
    block: int | Sequence[int] = 128,
    halo: int = 32,
    sigma: float | None = None,
    resume: bool = False,
    threads: int | None = None,
    batch: int | None = None,
    protect: Sequence[str | os.PathLike] = (),
    timeout: float = 30.0,
    progress: bool = False,
    on_block: Callable[[dict], None] | None = None,
    echo: Callable[[str], None] | None = None,
) -> Path:
    """Denoise the zarr array or OME-Zarr image ``source`` block by block on a Dask cluster into ``target``.

    Parameters
    ----------
    source : a ``.zarr`` array or OME-Zarr image on storage that every worker reads at the same path.
    target : the output ``.zarr`` folder (an OME-Zarr image for an OME-Zarr source), on storage every
        worker writes at the same path; written only when every block is done.
    load_denoiser : a picklable callable returning the denoiser, called once in each worker process
        (see the module notes); never a loaded model.
    scheduler : ``"local"`` (one worker process per core), ``"local:N"`` (N processes, one thread
        each), ``"tcp://HOST:PORT"`` (a running scheduler), the path of a scheduler file, or an open
        :class:`distributed.Client` (kept open).
    model_key : the SHA-256 of the weights ``load_denoiser`` reads (``None`` for a filter): the
        workers' cache and the resume check are keyed by it with the loader.
    axes, block, halo, sigma : as :func:`~pairless.inference.chunked.denoise_chunked` takes them.
    resume : continue the interrupted run into ``target``, skipping the blocks it finished.
    threads : torch threads per block (default: the cores per Dask thread on each worker's host).
    batch : tasks in flight at once (default: twice the cluster's threads, at least 4).
    timeout : seconds to wait for the scheduler, and for its first worker.
    on_block : called on the client with each finished task's ``{"level", "index", "worker",
        "read_write_s", "denoise_s"}`` (``denoise_s`` is the time in the denoiser).
    echo : receives a line when a run resumes.

    Returns
    -------
    The target path.
    """
    source, target = Path(source), Path(target)
    check_request(source, target, halo=halo, protect=protect)
    if source.suffix.lower() != ".zarr":
        raise PairlessError(
            f"denoising on a Dask cluster reads .zarr inputs (a zarr array or an OME-Zarr image), not"
            f" {str(source)!r}; convert it to zarr, or drop --scheduler"
        )
    from pairless.io.files import check_replace

    check_replace(target)  # a target this run may not replace fails before any work
    with _open_source(source) as (array, stored_axes, attributes):
        volume = SimpleNamespace(shape=tuple(array.shape), dtype=np.dtype(array.dtype))
    ngff = _ngff_source(source)
    key = _model_key(load_denoiser, model_key)
    with connect(scheduler, timeout=timeout) as client:
        job = _Job(
            load_denoiser=load_denoiser,
            model_key=key,
            source=str(source.resolve() / ngff.level if ngff is not None else source.resolve()),
            output="",
            ngff=ngff is not None,
            plan=None,
            sigma=sigma,
            threads=threads,
            host_threads=_host_threads(client),
        )
        described = _prepare_workers(client, job, volume)
        check_denoiser(described)
        plan = plan_blocks(
            source, volume, described, axes=axes or stored_axes, block=block, halo=halo, ngff=ngff
        )
        staging = target.parent / f".{target.name}{STAGING_SUFFIX}"
        request = _request(source, volume, plan, ngff, key, sigma)
        provenance = _provenance(described, source)
        levels = _open_staging(
            staging,
            target,
            request,
            resume=resume,
            echo=echo,
            create=lambda folder: _create(folder, plan, ngff, attributes, provenance),
        )
        job = dataclasses.replace(job, output=str(staging.resolve() / DATA), plan=plan)
        record = _Record(staging / DONE_FILE, counts=[plan.count] + [_chunk_count(s, plan) for s in levels])
        left = record.left()
        if resume and echo is not None:
            echo(
                f"resuming {target}: {record.total - left} of {record.total} tasks were done; running the"
                f" other {left}"
            )
        window = batch or max(4, 2 * sum(client.nthreads().values()))
        try:
            with _progress(progress, total=left) as advance:
                for level in range(len(record.done)):
                    todo = (
                        (level, int(i)) for i in range(len(record.done[level])) if not record.done[level][i]
                    )
                    _run_tasks(
                        client, job, todo, window=window, record=record, advance=advance, on_block=on_block
                    )
        except PairlessError as err:
            raise PairlessError(f"{err}; {_kept(record, target)}") from None
        except Exception as err:
            if _is_killed_worker(err):
                raise PairlessError(
                    f"a block killed {_allowed_failures()} workers in turn (out of memory?); use a smaller"
                    f" --block or give each worker more memory; {_kept(record, target)}"
                ) from None
            if _is_lost_connection(err):
                raise PairlessError(
                    f"lost the Dask scheduler mid-run ({_first_line(err)}); {_kept(record, target)}"
                ) from None
            raise
        finally:
            record.close()
        if record.left():  # every task reported done; the record must say so too
            raise PairlessError(f"{record.left()} tasks are not recorded as done; {_kept(record, target)}")
    _finish(staging, target)
    return target


def denoise_volumes(
    sources: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    load_denoiser: Callable[[], Denoiser],
    *,
    scheduler="local",
    timeout: float = 30.0,
    echo: Callable[[str], None] | None = None,
    **options,
) -> list[Path]:
    """Denoise each ``.zarr`` volume of ``sources`` into ``out/<its name>`` on one cluster (see
    :func:`denoise_distributed`, which takes ``options``); each is put in place when it is done."""
    sources = [Path(p) for p in sources]
    if not sources or any(p.suffix.lower() != ".zarr" for p in sources):
        odd = next((str(p) for p in sources if p.suffix.lower() != ".zarr"), "no input")
        raise PairlessError(
            f"a Dask cluster denoises .zarr volumes (zarr arrays or OME-Zarr images), not {odd}; convert it"
            " to zarr, or drop --scheduler"
        )
    names = [p.name for p in sources]
    if len(set(names)) < len(names):
        raise PairlessError(
            "several inputs have one name and would be written to one output; denoise them into separate"
            " --out folders"
        )
    protect = [*sources, *options.pop("protect", ())]
    from pairless.io.files import check_replace

    for path in sources:  # every target is checked before the first volume is denoised
        check_request(path, Path(out) / path.name, halo=options.get("halo", 0), protect=protect)
        check_replace(Path(out) / path.name)
    written = []
    with connect(scheduler, timeout=timeout) as client:
        for path in sources:
            target = Path(out) / path.name
            denoise_distributed(
                path, target, load_denoiser, scheduler=client, protect=protect, echo=echo, **options
            )
            if echo is not None:
                echo(f"{path} -> {target}")
            written.append(target)
    return written


# --------------------------------------------------------------------------------------------------
# The client side


@contextlib.contextmanager
def connect(scheduler, *, timeout: float = 30.0) -> Iterator:
    """Yield a :class:`distributed.Client` for ``scheduler`` (see :func:`denoise_distributed`) with at
    least one worker; a cluster or client made here is closed at the end, one passed in is kept."""
    distributed = _require_distributed()
    if isinstance(scheduler, distributed.Client):
        yield scheduler
        return
    text = str(scheduler)
    if text == "local" or text.startswith("local:"):
        n = _local_workers(text)
        with distributed.LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster:
            with distributed.Client(cluster, set_as_default=False) as client:
                yield client
        return
    if "://" in text:
        options, where = {"address": text}, f"the Dask scheduler at {text}"
    elif Path(text).is_file():
        options, where = {"scheduler_file": text}, f"the Dask scheduler of {text}"
    else:
        raise PairlessError(
            f"--scheduler {text!r} is neither local[:N], a scheduler address (tcp://HOST:PORT) nor an"
            " existing scheduler file; start a scheduler (dask scheduler) and pass its address"
        )
    try:
        client = distributed.Client(**options, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as err:
        raise PairlessError(
            f"cannot reach {where} ({_first_line(err)}); check the address and that the scheduler runs, or"
            " use --scheduler local:N"
        ) from None
    with client:
        try:
            client.wait_for_workers(1, timeout=timeout)
        except (TimeoutError, OSError):
            raise PairlessError(
                f"{where} has no workers (waited {timeout:g} s); start some (dask worker ADDRESS) and run"
                " again"
            ) from None
        yield client


def _local_workers(text: str) -> int:
    if text == "local":
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    try:
        n = int(text.removeprefix("local:"))
    except ValueError:
        n = 0
    if n < 1:
        raise PairlessError(f"--scheduler {text!r}: local:N needs a positive number of worker processes")
    return n


def _require_distributed():
    try:
        import distributed
    except ImportError:
        raise PairlessError(
            "denoising on a Dask cluster needs dask.distributed, which is not installed; pip install"
            " 'pairless[distributed]'"
        ) from None
    return distributed


def _model_key(load_denoiser, model_key: str | None) -> str:
    """What identifies the model on the workers: the loader's pickled recipe and the weights' digest."""
    import cloudpickle

    try:
        recipe = cloudpickle.dumps(load_denoiser)
    except Exception as err:  # pickling reports many types
        raise PairlessError(
            f"the model loader cannot be sent to the workers ({_first_line(err)}); pass a module-level"
            " function or a functools.partial of one, e.g. functools.partial(pairless.api.load, 'my-model')"
        ) from None
    return hashlib.sha256(recipe + (model_key or "").encode()).hexdigest()


def _host_threads(client) -> dict[str, int]:
    """The Dask threads of all workers on each host: the cores of a host are shared among them."""
    from distributed.comm import get_address_host

    totals: dict[str, int] = {}
    for address, n in client.nthreads().items():
        host = get_address_host(address)
        totals[host] = totals.get(host, 0) + n
    return totals


def _prepare_workers(client, job: _Job, volume) -> SimpleNamespace:
    """Load the model and open the input on every worker; one line naming a worker that cannot."""
    replies = client.run(_prepare, job, tuple(volume.shape), volume.dtype.str, on_error="return")
    described = None
    for address, reply in sorted(replies.items()):
        if isinstance(reply, ImportError):
            raise PairlessError(
                f"worker {address} cannot run pairless's tasks ({type(reply).__name__}:"
                f" {_first_line(reply)}); install the same pairless in the workers' environment"
            )
        if isinstance(reply, BaseException):
            raise reply
        if "error" in reply:
            raise PairlessError(reply["error"])
        if described is None:
            described = reply
        elif reply["spatial_ndim"] != described["spatial_ndim"] or reply["auto"] != described["auto"]:
            raise PairlessError(
                f"workers {sorted(replies)[0]} and {address} load different models from one loader; give"
                " every worker the same model files"
            )
    return SimpleNamespace(**described)


def _request(source: Path, volume, plan: BlockPlan, ngff, key: str, sigma) -> dict:
    """What a run computes, as ``run.json`` keeps it: a resumed run must ask for exactly this."""
    return {
        "source": str(source.resolve()),
        "shape": list(plan.shape),
        "dtype": volume.dtype.str,
        "axes": plan.axes,
        "block": list(plan.edges),
        "halo": list(plan.halos),
        "sigma": sigma,
        "model": key,
        "format": "ome-zarr" if ngff is not None else "zarr",
    }


def _open_staging(
    staging: Path, target: Path, request: dict, *, resume: bool, echo, create
) -> list[tuple[int, ...]]:
    """Continue (``resume``) or start the staging folder; return the shapes of the pyramid levels.

    The staging folder's own files are written without :func:`~pairless.io.files.check_replace`: they
    are this command's working state (a resumed run rewrites them), not outputs."""
    from pairless.io.files import make_folder

    found = _read_json(staging / RUN_FILE)
    if found is not None:
        _check_client(staging, target)
    if resume and found is not None:
        differ = [k for k in request if found.get("request", {}).get(k) != request[k]]
        if differ:
            raise PairlessError(
                f"cannot resume {target}: the interrupted run used another {', '.join(differ)} (see"
                f" {staging / RUN_FILE}); run without --resume to start over"
            )
    else:
        if resume and echo is not None:
            echo(f"nothing to resume in {staging}; starting from the first block")
        shutil.rmtree(staging, ignore_errors=True)  # a dead run's leftovers, or a fresh start
        make_folder(staging)
        levels = create(staging / DATA)
        # run.json is written last: a staging folder without it was never a started run
        _write_json(staging / RUN_FILE, {"request": request, "levels": levels})
        found = _read_json(staging / RUN_FILE)
    _write_json(staging / CLIENT_FILE, _me())
    return [tuple(s) for s in found["levels"]]


def _create(folder: Path, plan: BlockPlan, ngff, attributes: dict, provenance: dict) -> list[list[int]]:
    """Create the empty output with its final chunks and metadata; return its pyramid levels' shapes."""
    out, writer = create_output(folder, plan, attributes, ngff, provenance)
    if writer is None:
        return []
    # the pyramid's data come from tasks; finish() here writes only the metadata, since its
    # downsampling runs over writer.arrays, cut to the full level (the levels are already created)
    writer.arrays = writer.arrays[:1]
    writer.finish()
    return [list(s) for s in writer.shapes[1:]]


def _chunk_count(shape: Sequence[int], plan: BlockPlan) -> int:
    return int(np.prod([-(-n // min(e, n)) for n, e in zip(shape, plan.edges)]))


def _me() -> dict:
    from pairless.io.processes import start_ticks

    return {"host": socket.gethostname(), "pid": os.getpid(), "ticks": start_ticks(os.getpid())}


def _check_client(staging: Path, target: Path) -> None:
    """Refuse to take over a staging folder whose client still runs on this host."""
    from pairless.io.processes import alive

    owner = _read_json(staging / CLIENT_FILE) or {}
    if (
        owner.get("host") == socket.gethostname()
        and owner.get("pid") not in (None, os.getpid())
        and alive(int(owner["pid"]), owner.get("ticks"))
    ):
        raise PairlessError(
            f"another run (pid {owner['pid']}) is writing {target}; wait for it to end, or stop it and run"
            " again"
        )


def _write_json(path: Path, data: dict) -> None:
    """Write ``path`` whole or not at all (a temporary file, flushed, renamed)."""
    from pairless.io.files import WRITE_ERRNOS, write_error

    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w") as fh:
            fh.write(json.dumps(data))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno in WRITE_ERRNOS:
            raise write_error(err, path) from None
        raise


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class _Record:
    """The completion record: one line ``level index`` per finished task, appended once its data is
    on disk.  A line cut by a kill is ignored (that task runs again)."""

    def __init__(self, path: Path, *, counts: list[int]):
        self.done = [np.zeros(n, bool) for n in counts]  # one byte per task: the only per-block state
        self.total = sum(counts)
        try:
            text = path.read_text()
        except FileNotFoundError:
            text = ""
        for line in text.splitlines(keepends=True):
            parts = line.split()
            if line.endswith("\n") and len(parts) == 2 and all(p.isdigit() for p in parts):
                level, index = map(int, parts)
                if level < len(self.done) and index < len(self.done[level]):
                    self.done[level][index] = True
        self.file = open(path, "a")

    def left(self) -> int:
        return self.total - sum(int(d.sum()) for d in self.done)

    def add(self, level: int, index: int) -> None:
        self.done[level][index] = True
        self.file.write(f"{level} {index}\n")
        self.file.flush()  # a line lost with the client only means that block runs again

    def close(self) -> None:
        if not self.file.closed:
            with contextlib.suppress(OSError):
                os.fsync(self.file.fileno())
            self.file.close()


def _run_tasks(client, job: _Job, todo: Iterator, *, window: int, record: _Record, advance, on_block) -> None:
    """Run ``todo``'s tasks with at most ``window`` in flight; record each as it finishes."""
    from distributed import as_completed

    run = uuid.uuid4().hex[:12]  # a fresh key per submission: a dead client's tasks are not reused

    def submit(task):
        level, index = task
        return client.submit(_task, job, level, index, key=f"pairless-{run}-{level}-{index}", pure=False)

    flight = {submit(t) for t in itertools.islice(todo, window)}
    if not flight:
        return
    pending = as_completed(flight, loop=client.loop)
    try:
        for future in pending:
            result = future.result()
            flight.discard(future)
            record.add(result["level"], result["index"])
            advance()
            if on_block is not None:
                on_block(result)
            following = next(todo, None)
            if following is not None:
                added = submit(following)
                flight.add(added)
                pending.add(added)
    finally:
        if flight:
            with contextlib.suppress(Exception):
                client.cancel(list(flight))


def _finish(staging: Path, target: Path) -> None:
    """Rename the finished data onto the target, then remove the staging folder."""
    from pairless.io.files import WRITE_ERRNOS, replace_folder, write_error

    try:
        replace_folder(staging / DATA, target)
    except OSError as err:
        if err.errno in WRITE_ERRNOS:
            raise write_error(err, target) from None
        raise
    shutil.rmtree(staging, ignore_errors=True)


def _kept(record: _Record, target: Path) -> str:
    done = record.total - record.left()
    return (
        f"nothing was written to {target}; the {done} of {record.total} tasks done are kept for"
        " --resume (the same command with --resume continues)"
    )


def _is_killed_worker(err: BaseException) -> bool:
    from distributed import KilledWorker

    return isinstance(err, KilledWorker)


def _is_lost_connection(err: BaseException) -> bool:
    # the scheduler gone: its comm closes, and the futures waited on are cancelled
    return type(err).__name__ in ("CommClosedError", "CancelledError", "FutureCancelledError")


def _allowed_failures() -> int:
    import dask

    return int(dask.config.get("distributed.scheduler.allowed-failures")) + 1


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# --------------------------------------------------------------------------------------------------
# The worker side: what a task carries, and what it does


@dataclasses.dataclass(frozen=True)
class _Job:
    """What every task of a run needs, sent with each task: paths, the cut, the model's recipe (small)."""

    load_denoiser: Callable[[], Denoiser]
    model_key: str
    source: str  # the input's full-resolution zarr array
    output: str  # the output being written (the staging folder's data/)
    ngff: bool  # an OME-Zarr output keeps its levels in data/0, data/1, ...
    plan: BlockPlan | None
    sigma: float | None
    threads: int | None
    host_threads: dict[str, int]

    def level_path(self, level: int) -> Path:
        """The zarr array of output level ``level`` (an OME-Zarr output keeps its levels in 0, 1, ...)."""
        return Path(self.output) / str(level) if self.ngff else Path(self.output)


_MODELS: OrderedDict[str, Denoiser] = OrderedDict()
_MODELS_LOCK = threading.Lock()


def _prepare(job: _Job, shape: tuple[int, ...], dtype: str, dask_worker=None) -> dict:
    """On each worker before the run: set threads, load the model, open the input.  Errors come back
    as one line naming the worker (``client.run`` would carry a traceback)."""
    where = dask_worker.address if dask_worker is not None else "?"
    try:
        threads = _set_threads(job, where, dask_worker.state.nthreads if dask_worker is not None else 1)
        denoiser = _denoiser(job, where)
        array = _open_array(job.source, where, write=False)
        if tuple(array.shape) != shape or np.dtype(array.dtype).str != dtype:
            raise PairlessError(
                f"worker {where} sees {job.source} as {array.dtype} {tuple(array.shape)}, the client as"
                f" {np.dtype(dtype)} {shape}; mount the same data at the same path on every worker"
            )
        provenance = getattr(denoiser, "provenance", None) or {"method": type(denoiser).__name__}
        return {
            "spatial_ndim": denoiser.spatial_ndim,
            "auto": bool(getattr(denoiser, "auto", False)),
            "provenance": dict(provenance),
            "threads": threads,
        }
    except PairlessError as err:
        return {"error": str(err)}


def _task(job: _Job, level: int, index: int) -> dict:
    """One block of level 0 (read with its halo, denoise, write its chunk), or one chunk of a pyramid
    level (from the level before); its chunk is on disk when this returns."""
    from distributed import get_worker

    worker = get_worker()
    where = worker.address
    started = time.perf_counter()
    out_path = job.level_path(level)
    out = _open_array(out_path, where, write=True)
    plan = job.plan
    grid = plan.grid if level == 0 else tuple(-(-n // c) for n, c in zip(out.shape, out.chunks))
    coords = tuple(int(c) for c in np.unravel_index(index, grid))
    chunk = out_path / out.metadata.encode_chunk_key(coords)
    _remove_partial(chunk)
    denoise_s = 0.0
    try:
        if level == 0:
            _set_threads(job, where, worker.state.nthreads)
            denoiser = _denoiser(job, where)
            source = _open_array(job.source, where, write=False)
            try:
                denoise_s = denoise_block(source, out, plan, index, denoiser, sigma=job.sigma)
            except PairlessError as err:
                inner, _ = plan.region(index)
                where_in = ", ".join(f"{s.start}:{s.stop}" for s in inner)
                raise PairlessError(f"block [{where_in}] on worker {where}: {err}") from None
        else:
            _downsample_chunk(_open_array(job.level_path(level - 1), where, write=False), out, coords, plan)
    except OSError as err:
        raise _io_error(err, job, where) from None
    _sync(chunk)
    return {
        "level": level,
        "index": index,
        "worker": where,
        "read_write_s": time.perf_counter() - started - denoise_s,
        "denoise_s": denoise_s,
    }


def _set_threads(job: _Job, where: str, own: int) -> int:
    """Set torch's threads on the calling thread: ``job.threads``, or the host's cores per Dask thread
    (``own``, this worker's Dask threads, for a host that joined after the start)."""
    import torch
    from distributed.comm import get_address_host

    n = job.threads
    if n is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        n = max(1, cores // job.host_threads.get(get_address_host(where), own))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def _denoiser(job: _Job, where: str) -> Denoiser:
    """The run's denoiser in this worker process, loaded at its first use (see the module notes)."""
    with _MODELS_LOCK:
        denoiser = _MODELS.get(job.model_key)
        if denoiser is None:
            try:
                denoiser = job.load_denoiser()
            except PairlessError as err:
                raise PairlessError(
                    f"worker {where} cannot load the model ({err}); put the model where every worker reads"
                    " it at the same path"
                ) from None
            _MODELS[job.model_key] = denoiser
            while len(_MODELS) > MODELS_KEPT:
                _MODELS.popitem(last=False)
        _MODELS.move_to_end(job.model_key)
        return denoiser


def _open_array(path: str | Path, where: str, *, write: bool):
    import zarr

    try:
        return zarr.open_array(str(path), mode="r+" if write else "r")
    except Exception as err:  # zarr reports a missing or unreadable store with many types
        verb = "write" if write else "read"
        fix = (
            "give every worker write access to the output folder at the same path"
            if write
            else "put the input on storage every worker reads at the same path"
        )
        raise PairlessError(f"worker {where} cannot {verb} {path} ({_first_line(err)}); {fix}") from None


def _io_error(err: OSError, job: _Job, where: str) -> PairlessError:
    path = err.filename or job.source
    if str(path).startswith(job.output):
        return PairlessError(
            f"worker {where} cannot write {path} ({err.strerror or err}); give every worker write access to"
            " the output folder at the same path"
        )
    return PairlessError(
        f"worker {where} cannot read {path} ({err.strerror or err}); put the input on storage every worker"
        " reads at the same path"
    )


def _remove_partial(chunk: Path) -> None:
    """Remove what a write of this chunk killed mid-way left (zarr writes ``<name>.<uuid>.partial``
    and renames it); only this task writes this chunk."""
    if "." in chunk.name:  # dotted chunk keys share the prefix; pairless's outputs use "/" keys
        return
    for leftover in chunk.parent.glob(f"{chunk.name}.*.partial"):
        leftover.unlink(missing_ok=True)


def _sync(chunk: Path) -> None:
    """Flush the chunk and its folder entry to disk (a chunk equal to the fill value is not stored)."""
    for path, flags in ((chunk, os.O_RDONLY), (chunk.parent, os.O_RDONLY)):
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _Chunk:
    """One region of a zarr array seen as a whole array, so that :func:`pairless.io.ngff._downsample` (the
    single-process pyramid) fills exactly one chunk."""

    def __init__(self, array, start: Sequence[int], stop: Sequence[int]):
        self.array, self.start = array, tuple(start)
        self.shape = tuple(b - a for a, b in zip(start, stop))
        self.chunks = self.shape

    def _shift(self, key):
        return tuple(slice(s.start + o, s.stop + o) for s, o in zip(key, self.start))

    def __getitem__(self, key):
        return self.array[self._shift(key)]

    def __setitem__(self, key, value):
        self.array[self._shift(key)] = value


def _downsample_chunk(previous, out, coords: tuple[int, ...], plan: BlockPlan) -> None:
    from pairless.io.ngff import _downsample

    yx = (plan.axes.index("Y"), plan.axes.index("X"))
    start = [c * e for c, e in zip(coords, out.chunks)]
    stop = [min(a + e, n) for a, e, n in zip(start, out.chunks, out.shape)]
    below = [2 * a if i in yx else a for i, a in enumerate(start)]
    above = [min(2 * b, previous.shape[i]) if i in yx else b for i, b in enumerate(stop)]
    _downsample(_Chunk(previous, below, above), _Chunk(out, start, stop), yx)
