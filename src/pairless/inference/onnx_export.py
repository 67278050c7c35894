"""Export any trained pairless network to ONNX, so other runtimes (ONNX Runtime, OpenVINO, the
BioImage Model Zoo) can run it without PyTorch.

:func:`export_onnx` traces an eval-mode fp32 copy of the network (any ``nn.Module`` mapping one
tensor to one tensor) and writes a self-contained ``.onnx`` file (weights inside) atomically.  The batch axis
is always dynamic; with ``dynamic_spatial`` the
spatial axes are too, so one file serves every tile size the network accepts (for a U-Net, every
multiple of ``2**depth``).  :func:`check_onnx` runs the file in ONNX Runtime on random inputs and
compares it with the PyTorch network.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from pairless.errors import PairlessError

INPUT_NAME = "input"
OUTPUT_NAME = "output"
OPSET = 17


def export_onnx(
    net: nn.Module,
    path: str | os.PathLike,
    *,
    example: torch.Tensor,
    dynamic_spatial: bool = True,
    dynamo: bool = False,
) -> Path:
    """Write ``net`` as an ONNX model to ``path`` and return the path.

    Parameters
    ----------
    net : the network (left untouched: an eval-mode fp32 CPU copy is exported).
    path : target ``.onnx`` file; written to a temporary file beside it and renamed, so a failed
        export never leaves a truncated model under this name.
    example : an input of the shape the network takes, ``(N, C, *spatial)``; its values do not
        matter.  Choose spatial sizes the network accepts (a multiple of ``net.multiple``).
    dynamic_spatial : keep the spatial sizes symbolic (else they are fixed to ``example``'s).
        Python branches on the input's size (ISCL's F pads sizes that are not a multiple of 4) are
        fixed by the example: feed the exported model sizes like the example's (multiples of
        ``net.multiple``), as :func:`pairless.inference.tiling.predict_tiled` does.
    dynamo : use the ``torch.export`` exporter instead of the TorchScript tracer.  It is PyTorch's
        newer path but took minutes for ISCL's F with symbolic sizes on a 2-core machine, against
        under a second for the tracer, so the tracer is the default while PyTorch still ships it.

    Returns
    -------
    The path written.  The graph has one input ``"input"`` and one output ``"output"``.
    """
    from pairless.io.files import atomic_path

    _require("onnx", *(("onnxscript",) if dynamo else ()))
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise PairlessError(f"the ONNX model {str(path)!r} must end in .onnx; name it e.g. {path.stem}.onnx")
    if example.ndim < 3:
        raise PairlessError(
            f"the example input must be (N, C, *spatial), got shape {tuple(example.shape)}; add axes with"
            " x[None, None]"
        )
    runner = copy.deepcopy(net).float().cpu().eval()
    example = example.detach().float().cpu()
    dynamic = [0, *range(2, example.ndim)] if dynamic_spatial else [0]
    with atomic_path(path) as tmp, _quiet(), torch.no_grad(), _rot90_as_flips():
        try:
            if dynamo:
                dims = {axis: torch.export.Dim.AUTO for axis in dynamic}
                program = torch.onnx.export(
                    runner,
                    (example,),
                    dynamo=True,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_shapes=(dims,),
                    opset_version=OPSET,
                    external_data=False,
                )
                program.save(str(tmp), external_data=False)
            else:
                names = {axis: f"d{axis}" for axis in dynamic}
                torch.onnx.export(
                    runner,
                    (example,),
                    str(tmp),
                    dynamo=False,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: names, OUTPUT_NAME: names},
                    opset_version=OPSET,
                    do_constant_folding=True,
                )
        except PairlessError:
            raise
        except Exception as err:  # the exporters raise many types; name the network and the first line
            raise PairlessError(
                f"could not export {type(net).__name__} to ONNX ({type(err).__name__}: {_first_line(err)})"
            ) from err
        import onnx

        onnx.checker.check_model(str(tmp))
    return path


def check_onnx(
    net: nn.Module,
    path: str | os.PathLike,
    shapes: Sequence[Sequence[int]],
    *,
    seed: int = 0,
) -> float:
    """Largest absolute difference between ONNX Runtime and fp32 PyTorch on random inputs of ``shapes``."""
    import numpy as np

    _require("onnxruntime")
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    runner = copy.deepcopy(net).float().cpu().eval()
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for shape in shapes:
        x = torch.randn(*shape, generator=generator)
        with torch.no_grad():
            expected = runner(x).numpy()
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        if got.shape != expected.shape:
            raise PairlessError(
                f"ONNX output shape {got.shape} differs from PyTorch's {expected.shape} for input {shape}"
            )
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


@contextlib.contextmanager
def _rot90_as_flips():
    """Trace ``torch.rot90`` (no ONNX export in either exporter; the blind-spot network uses it) as the
    flips and transposes it is, exactly: the same permutation of the elements."""
    original = torch.rot90

    def rot90(x: torch.Tensor, k: int = 1, dims=(0, 1)) -> torch.Tensor:
        a, b = dims
        k %= 4
        if k == 1:
            return x.flip(b).transpose(a, b)
        if k == 2:
            return x.flip(a).flip(b)
        if k == 3:
            return x.transpose(a, b).flip(b)
        return x

    torch.rot90 = rot90
    try:
        yield
    finally:
        torch.rot90 = original


def _require(*modules: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise PairlessError(
            f"ONNX export needs {', '.join(missing)}, which is not installed; pip install 'pairless[onnx]'"
        )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else "no message"


@contextlib.contextmanager
def _quiet():
    """Silence the exporter's progress lines and deprecation chatter (it prints to stdout)."""
    import logging

    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
