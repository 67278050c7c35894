"""CPU inference engines for tiled prediction, and ``auto``: the fastest one that keeps the result.

:func:`pairless.inference.tiling.predict_tiled` hands every batch of tiles to a *forward* function made here.
``torch`` is PyTorch itself (the eval copy ``predict_tiled`` always made: batch norm folded,
channels-last, bf16 where the CPU has it); ``onnxruntime`` runs the network exported to ONNX
(:mod:`pairless.inference.onnx_export`) in ONNX Runtime in fp32; ``openvino`` compiles the same ONNX file
with OpenVINO for the tile shape, in bf16 on a CPU with native bf16 when that passes the accuracy
gate below, else in f32.  The two are optional extras (``pairless[onnx]``, ``pairless[openvino]``).

**The accuracy gate.**  An engine (or precision) is used only if its output on a batch of real
tiles has PSNR ≥ :data:`GATE_DB` (70 dB: stricter than the 50 dB floor, see its comment) against
fp32 PyTorch's output on the same batch, over that output's data range (max − min).  ``auto`` times every
installed candidate on that batch (one warm-up run,
then the best of :data:`PROBE_RUNS`), drops those that fail the gate and takes the fastest; fp32
PyTorch always passes, so ``auto`` works with nothing else installed.  The choice is cached per
machine (CPU model, thread count, library versions), network (a digest of its class and weights)
and tile batch shape, in ``engines.json`` under :func:`cache_dir`, with the measured MP/s and PSNR,
so the probe runs once.  Exported ONNX files are cached there too.

Use ``with use_engine("auto"): ...`` around code that ends in ``predict_tiled`` (the CLI's
``--engine`` does), or pass ``engine=`` to ``predict_tiled``.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import importlib.util
import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from pairless.errors import PairlessError

ENGINES = ("auto", "torch", "onnxruntime", "openvino")
# exact variants, run without the gate (for benchmarks and comparisons); "torch" is PyTorch as
# predict_tiled's precision says, "torch-fp32" is PyTorch in fp32 whatever the precision
VARIANTS = ("torch-fp32", "openvino-f32", "openvino-bf16")
# The issue asks for ≥ 50 dB against fp32 *and* a denoising PSNR within 0.02 dB.  50 dB does not
# imply the second: bf16 (PyTorch's and OpenVINO's, bit-identical here) reached 55-56 dB on the
# default U-Net trained 150-600 steps on the camera and moved its denoising PSNR (27.2-28.2 dB) by
# -0.04 to +0.05 dB, depending on the checkpoint, because its error correlates with the denoising
# error (correlation -0.09 to +0.13; a mean offset is part of it).  0.02 dB even for a fully
# correlated error needs the engine's PSNR ≥ the denoising PSNR + 52.8 dB, i.e. ≥ ~70 dB for
# denoisers down to ~17 dB; fp32 engines reach ~140 dB.
GATE_DB = 70.0
PROBE_RUNS = 2
_EXTRA = {"onnxruntime": ("onnxruntime", "onnx"), "openvino": ("openvino", "openvino")}  # module, extra
_CURRENT: contextvars.ContextVar[str] = contextvars.ContextVar("pairless_engine", default="torch")
_RUNNERS: dict[tuple, Callable] = {}  # (digest, variant, threads) -> forward, for this process
_CHOICES: dict[tuple, str] = {}  # probe key -> variant, for this process

Forward = Callable[[Tensor], Tensor]


@contextlib.contextmanager
def use_engine(engine: str) -> Iterator[None]:
    """Make ``engine`` the one :func:`~pairless.inference.tiling.predict_tiled` uses inside the block."""
    check_engine(engine)
    token = _CURRENT.set(engine)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current_engine() -> str:
    return _CURRENT.get()


def check_engine(engine: str) -> str:
    """Return ``engine`` if it is known and installed, else raise one clear line."""
    if engine not in ENGINES + VARIANTS:
        raise PairlessError(f"engine {engine!r} is not one of {', '.join(ENGINES)}; pick one of those")
    runtime = engine.split("-")[0]
    if runtime in _EXTRA and not installed(runtime):
        module, extra = _EXTRA[runtime]
        raise PairlessError(
            f"engine {engine!r} is not installed (no module {module}); pip install 'pairless[{extra}]' "
            "or use --engine torch"
        )
    return engine


def installed(engine: str) -> bool:
    """Whether the engine's runtime can be imported (ONNX Runtime also needs onnx for the export)."""
    if engine == "torch":
        return True
    if engine == "onnxruntime":
        return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))
    if engine == "openvino":
        return all(importlib.util.find_spec(m) is not None for m in ("openvino", "onnx"))
    return False


class EngineDenoiser(nn.Module):
    """A denoiser that runs another one under :func:`use_engine` (what ``--engine`` wraps a model in).

    Attributes the wrapped denoiser has (``spatial_ndim``, ``tile``, ``provenance``, ...) read through.
    """

    def __init__(self, inner: nn.Module, engine: str):
        super().__init__()
        self.inner = inner
        self.engine = check_engine(engine)

    def forward(self, y: Tensor, sigma: float | None = None) -> Tensor:
        with use_engine(self.engine):
            return self.inner(y, sigma=sigma)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get("_modules", {}).get("inner")
            if inner is None or name.startswith("__"):  # during copy/unpickling, before inner exists
                raise
            return getattr(inner, name)


# ----------------------------------------------------------------- choosing the forward function


def make_forward(
    net: nn.Module,
    engine: str,
    *,
    torch_forward: Callable[[], Forward],
    reference: Callable[[], Forward],
    probe: Callable[[], Tensor],
) -> tuple[Forward, str]:
    """The forward function ``predict_tiled`` runs its tile batches through, and its variant's name.

    ``torch_forward`` and ``reference`` build PyTorch's forward (as ``predict_tiled`` would run it)
    and the fp32 one the gate compares with; ``probe`` returns the first batch of real tiles.
    """
    check_engine(engine)
    if engine == "torch":
        return torch_forward(), "torch"
    if engine == "torch-fp32":
        return reference(), engine
    digest = network_digest(net)
    batch = probe()
    key = (_machine(), digest, tuple(batch.shape))
    if engine in ("onnxruntime", "openvino-f32", "openvino-bf16"):
        return _runner(net, digest, engine, batch), engine
    if engine == "openvino":
        if not cpu_has_bf16():
            return _runner(net, digest, "openvino-f32", batch), "openvino-f32"
        variant = _gate_cached(key, "openvino-bf16", net, digest, batch, reference)
        return _runner(net, digest, variant, batch), variant
    variant = choose(net, digest, batch, torch_forward=torch_forward, reference=reference, key=key)
    if variant == "torch":
        return torch_forward(), variant
    if variant == "torch-fp32":
        return reference(), variant
    return _runner(net, digest, variant, batch), variant


def candidates() -> list[str]:
    """The variants ``auto`` considers on this machine, fp32 PyTorch first."""
    names = ["torch-fp32", "torch"]
    if installed("onnxruntime"):
        names.append("onnxruntime")
    if installed("openvino"):
        names.append("openvino-f32")
        if cpu_has_bf16():
            names.append("openvino-bf16")
    return names


def choose(
    net: nn.Module,
    digest: str,
    batch: Tensor,
    *,
    torch_forward: Callable[[], Forward],
    reference: Callable[[], Forward],
    key: tuple,
) -> str:
    """The fastest variant that passes the gate on ``batch``: from the caches, or by a timed probe."""
    if key in _CHOICES:
        return _CHOICES[key]
    cached = _read_cache().get(_key_text(key))
    if cached and cached.get("choice") in candidates():
        _CHOICES[key] = cached["choice"]
        return cached["choice"]
    record = probe_engines(net, digest, batch, torch_forward=torch_forward, reference=reference)
    _write_cache(_key_text(key), record)
    _CHOICES[key] = record["choice"]
    for held in [k for k in _RUNNERS if k[0] == digest and k[1] != record["choice"]]:
        del _RUNNERS[held]  # free the sessions and compiled models of the engines not chosen
    return record["choice"]


def probe_engines(
    net: nn.Module,
    digest: str,
    batch: Tensor,
    *,
    torch_forward: Callable[[], Forward],
    reference: Callable[[], Forward],
) -> dict:
    """Time every candidate on ``batch`` and gate it; return ``{"choice", "mp_s", "psnr_db", ...}``."""
    pixels = batch.shape[0] * math.prod(batch.shape[2:])
    ref_forward = reference()
    expected = ref_forward(batch)
    mp_s, psnr, failed = {}, {}, {}
    for variant in candidates():
        try:
            if variant == "torch-fp32":
                forward = ref_forward
            elif variant == "torch":
                forward = torch_forward()
            else:
                forward = _runner(net, digest, variant, batch)
            out = forward(batch)  # warm-up: compiles, allocates
            psnr[variant] = gate_psnr(out, expected)
            best = math.inf
            for _ in range(PROBE_RUNS):
                start = time.perf_counter()
                forward(batch)
                best = min(best, time.perf_counter() - start)
            mp_s[variant] = pixels / best / 1e6
        except Exception as err:  # an engine that cannot run this network is simply not chosen
            failed[variant] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:200]
    passing = [v for v in mp_s if psnr.get(v, -math.inf) >= GATE_DB or v == "torch-fp32"]
    choice = max(passing, key=lambda v: mp_s[v])
    return {
        "choice": choice,
        "mp_s": mp_s,
        "psnr_db": psnr,
        "failed": failed,
        "gate_db": GATE_DB,
        "batch": list(batch.shape),
        "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def gate_psnr(out: Tensor, expected: Tensor) -> float:
    """PSNR of ``out`` against ``expected`` over ``expected``'s range (max − min), in dB (at most 999)."""
    out, expected = out.double(), expected.double()
    mse = float(((out - expected) ** 2).mean())
    span = float(expected.max() - expected.min())
    if mse == 0:
        return 999.0  # identical (kept finite so the cache stays plain JSON)
    if span == 0:
        span = max(float(expected.abs().max()), 1.0)
    return min(10 * math.log10(span**2 / mse), 999.0)


def _gate_cached(key: tuple, variant: str, net: nn.Module, digest: str, batch: Tensor, reference) -> str:
    """``variant`` (bf16) if it passes the gate on ``batch``, else its f32 twin; cached like ``auto``."""
    text = _key_text(key) + f"|gate:{variant}"
    if text not in _read_cache():
        forward = _runner(net, digest, variant, batch)
        _write_cache(text, {"psnr_db": gate_psnr(forward(batch), reference()(batch)), "gate_db": GATE_DB})
    record = _read_cache().get(text)
    if record is None:  # the cache could not be written: decide from this run's measurement
        record = {"psnr_db": gate_psnr(_runner(net, digest, variant, batch)(batch), reference()(batch))}
    if record["psnr_db"] >= GATE_DB:
        return variant
    _RUNNERS.pop((digest, variant, torch.get_num_threads(), tuple(batch.shape[2:])), None)
    return variant.replace("bf16", "f32")


# ----------------------------------------------------------------- the engines


def _runner(net: nn.Module, digest: str, variant: str, batch: Tensor) -> Forward:
    threads = torch.get_num_threads()
    # per tile shape: a network may branch in Python on its input's shape (the blind-spot network does
    # on square inputs), and an export fixes such branches for the example's shape
    key = (digest, variant, threads, tuple(batch.shape[2:]))
    if key not in _RUNNERS:
        onnx_path = _onnx_file(net, digest, batch)
        if variant == "onnxruntime":
            _RUNNERS[key] = _onnxruntime_forward(onnx_path, threads)
        else:
            _RUNNERS[key] = _openvino_forward(onnx_path, threads, bf16=variant.endswith("bf16"))
    return _RUNNERS[key]


def _onnx_file(net: nn.Module, digest: str, batch: Tensor) -> Path:
    from pairless.inference.onnx_export import export_onnx

    name = f"{digest}-{'x'.join(map(str, batch.shape[2:]))}.onnx"
    path = cache_dir() / "onnx" / name
    if path.is_file():
        return path
    example = batch[:1].float().cpu().contiguous()
    try:
        return export_onnx(net, path, example=example)
    except OSError:  # the cache cannot be written here: export for this process only
        import tempfile

        return export_onnx(net, Path(tempfile.mkdtemp(prefix="pairless-onnx-")) / name, example=example)


def _onnxruntime_forward(path: Path, threads: int) -> Forward:
    import onnxruntime as ort

    from pairless.inference.onnx_export import INPUT_NAME, OUTPUT_NAME

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(x: Tensor) -> Tensor:
        inp = x.detach().float().contiguous().numpy()
        return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: inp})[0])

    return forward


def _openvino_forward(path: Path, threads: int, *, bf16: bool) -> Forward:
    """OpenVINO compiled for each input shape it meets (tile batches have one or two shapes)."""
    import numpy as np

    core = _openvino_core()
    config = {
        "INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32",
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
    }
    compiled: dict[tuple, object] = {}

    def forward(x: Tensor) -> Tensor:
        shape = tuple(x.shape)
        if shape not in compiled:
            model = core.read_model(str(path))
            model.reshape(list(shape))
            compiled[shape] = core.compile_model(model, "CPU", config).create_infer_request()
        request = compiled[shape]
        inp = np.ascontiguousarray(x.detach().float().numpy())
        request.infer({0: inp})
        return torch.from_numpy(np.array(request.get_output_tensor(0).data, copy=True))

    return forward


@functools.lru_cache(maxsize=1)
def _openvino_core():
    import openvino as ov

    return ov.Core()


# ----------------------------------------------------------------- identity and cache


def network_digest(net: nn.Module) -> str:
    """A digest of the network's class, structure and weights: the same trained model gives the same one."""
    h = hashlib.sha256(f"{type(net).__module__}.{type(net).__qualname__}\n{net!r}".encode())
    for name, tensor in net.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:32]


@functools.lru_cache(maxsize=1)
def _machine_static() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = [f"torch {torch.__version__}"]
    for module in ("onnxruntime", "openvino"):
        if importlib.util.find_spec(module) is not None:
            from importlib.metadata import PackageNotFoundError, version

            with contextlib.suppress(PackageNotFoundError):
                versions.append(f"{module} {version(module)}")
    return f"{cpu}; {os.cpu_count()} cpus; " + ", ".join(versions)


def _machine() -> str:
    return f"{_machine_static()}; {torch.get_num_threads()} threads"


def _key_text(key: tuple) -> str:
    machine, digest, shape = key
    return f"{machine}|{digest}|{'x'.join(map(str, shape))}"


def cache_dir() -> Path:
    """``$PAIRLESS_CACHE_DIR``, else ``$XDG_CACHE_HOME/pairless``, else ``~/.cache/pairless``."""
    if os.environ.get("PAIRLESS_CACHE_DIR"):
        return Path(os.environ["PAIRLESS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pairless"


def _cache_file() -> Path:
    return cache_dir() / "engines.json"


def _read_cache() -> dict:
    try:
        data = json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(key: str, record: dict) -> None:
    """Add one record to the cache file atomically; a cache that cannot be written is only not kept."""
    from pairless.io.files import atomic_path

    data = _read_cache()
    data[key] = record
    with contextlib.suppress(OSError):
        with atomic_path(_cache_file()) as tmp:
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bf16 convolutions natively (AVX-512 bf16 or AMX), where bf16 pays off.

    oneDNN also offers bf16 on plain AVX-512 by emulation, which is slower than fp32: not counted.
    """
    return bool(
        torch.backends.mkldnn.is_available()
        and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    )
