"""Import: a bioimage.io package read into pairless's own network, nothing from it run."""

from __future__ import annotations

import contextlib
import inspect
import io
import os
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch import nn

from pairless.bmz.package import (
    MAX_PACKAGE_BYTES,
    RDF_NAMES,
    Normalisation,
    PackagedDenoiser,
    _check_state_shapes,
    _json_value,
    _sha256,
    architectures,
)
from pairless.denoiser import Denoiser
from pairless.errors import PairlessError
from pairless.inference.tiling import DEFAULT_TILE

# The most a text file of a package (rdf.yaml, bioimageio.yaml, ...) may unpack to.  A bioimage.io rdf
# is a few kB (pairless's own ~4 kB); PyYAML parses ~1 MB/s, so 1 MiB is read in a second, where a
# 1 GiB rdf.yaml (within the 4 GiB cap on the whole package) took minutes and gigabytes.
MAX_TEXT_BYTES = 1 << 20
TEXT_SUFFIXES = (".yaml", ".yml", ".json", ".md", ".txt")


def _safe_entries(archive: zipfile.ZipFile, path: Path) -> dict[str, zipfile.ZipInfo]:
    entries = {}
    total = 0
    for info in archive.infolist():
        name = info.filename
        pure = PurePosixPath(name.replace("\\", "/"))
        if (
            pure.is_absolute()
            or name.startswith(("/", "\\"))
            or (len(name) > 1 and name[1] == ":")
            or ".." in pure.parts
        ):
            raise PairlessError(
                f"{str(path)!r} has a zip entry with an absolute or '..' path ({name!r}); pairless refuses "
                "packages whose files could land outside their folder: get the package from a trusted source"
            )
        total += info.file_size
        entries[pure.as_posix()] = info
    if total > MAX_PACKAGE_BYTES:
        raise PairlessError(
            f"{str(path)!r} would unpack to {total / 1e9:.1f} GB, more than any denoiser needs; it is not a"
            " model package"
        )
    return entries


def _read(archive: zipfile.ZipFile, entries: dict, name: str, path: Path, sha256: str | None = None) -> bytes:
    key = PurePosixPath(str(name).replace("\\", "/")).as_posix()
    if key not in entries:
        raise PairlessError(
            f"{str(path)!r} names {name!r} in its rdf.yaml but does not contain it; the package is damaged"
        )
    size = entries[key].file_size
    if key.lower().endswith(TEXT_SUFFIXES) and size > MAX_TEXT_BYTES:
        raise PairlessError(
            f"{name!r} in {str(path)!r} would unpack to {size:,} bytes, more than the {MAX_TEXT_BYTES:,} a "
            "package's text file may have (an rdf.yaml is a few kB); it is not a model package"
        )
    try:
        # read(size), not read(): zipfile then unpacks no more than the size the zip declares (a member
        # that is larger fails the CRC check), where read() unpacks each compressed block whole
        with archive.open(entries[key]) as member:
            data = member.read(size)
    except (zipfile.BadZipFile, OSError, EOFError) as err:  # CRC mismatch, truncated member, bad compression
        raise PairlessError(
            f"{str(path)!r} is a corrupt zip ({err}); download or export the package again"
        ) from None
    if sha256 and _sha256(data) != str(sha256).lower():
        raise PairlessError(
            f"{name!r} in {str(path)!r} does not match the sha256 its rdf.yaml gives; the package is damaged"
            " or altered"
        )
    return data


def _not_a_denoiser(path: Path, why: str) -> PairlessError:
    return PairlessError(
        f"{str(path)!r} is not a denoiser package: {why}; pass a BMZ package of a one-channel denoiser"
    )


def _tensor_axes(tensor: dict, path: Path, which: str) -> tuple[list[str], int]:
    axes = tensor.get("axes")
    if not isinstance(axes, list):
        raise _not_a_denoiser(
            path, f"its {which} has no axes list (a bioimage.io 0.4 package? only 0.5 is read)"
        )
    ids, channels = [], 1
    for axis in axes:
        if not isinstance(axis, dict):
            raise _not_a_denoiser(path, f"its {which} axes are not spec-0.5 axis entries")
        kind = axis.get("type")
        if kind == "batch":
            continue
        if kind == "channel":
            channels = len(axis.get("channel_names") or [None])
            continue
        if kind != "space":
            raise _not_a_denoiser(path, f"its {which} has a {kind!r} axis")
        ids.append(str(axis.get("id", "")).lower())
    if channels != 1:
        raise _not_a_denoiser(path, f"its {which} has {channels} channels")
    if ids not in (["y", "x"], ["z", "y", "x"]):
        raise _not_a_denoiser(path, f"its {which} has spatial axes {ids}, not (z,) y, x")
    return ids, channels


def _affine(ops, path: Path, which: str) -> tuple[float, float]:
    """``(gain, offset)`` of a list of spec-0.5 processing steps that is affine (or the identity)."""
    gain, offset = 1.0, 0.0
    for op in ops or []:
        kind, kwargs = op.get("id"), op.get("kwargs") or {}
        if kind == "ensure_dtype":
            continue
        try:
            if kind == "scale_linear":
                g, o = float(kwargs.get("gain", 1.0)), float(kwargs.get("offset", 0.0))
            elif kind == "fixed_zero_mean_unit_variance":
                std = float(kwargs["std"]) + 1e-6  # bioimageio.core divides by std + 1e-6
                g, o = 1.0 / std, -float(kwargs["mean"]) / std
            else:
                raise PairlessError(
                    f"{str(path)!r} uses {which} {kind!r}, which pairless does not apply; only scale_linear"
                    " and fixed_zero_mean_unit_variance are supported (a per-image normalisation is not a"
                    " fixed model)"
                )
        except (TypeError, ValueError, KeyError):
            raise PairlessError(
                f"{str(path)!r} gives {which} {kind!r} per-channel or malformed kwargs; pairless reads scalar"
                " ones only"
            ) from None
        gain, offset = g * gain, g * offset + o
    return gain, offset


def read_bmz(path: str | os.PathLike) -> tuple[dict, zipfile.ZipFile, dict]:
    """Open a package: ``(rdf, archive, entries)`` after the safety checks; the caller closes ``archive``."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise PairlessError(f"{str(path)!r} is not a file; pass a BMZ package (.zip)")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise PairlessError(
            f"{str(path)!r} is not a readable zip ({err}); download or export the package again"
        ) from None
    try:
        entries = _safe_entries(archive, path)
        name = next((n for n in entries if n in RDF_NAMES), None) or next(
            (n for n in entries if n.endswith(".bioimageio.yaml") and "/" not in n), None
        )
        if name is None:
            raise _not_a_denoiser(path, "it has no rdf.yaml (not a bioimage.io package)")
        try:
            rdf = yaml.safe_load(_read(archive, entries, name, path))
        except yaml.YAMLError as err:
            raise PairlessError(
                f"{name} in {str(path)!r} is not valid YAML ({str(err).splitlines()[0]})"
            ) from None
        if not isinstance(rdf, dict) or rdf.get("type") != "model":
            kind = rdf.get("type") if isinstance(rdf, dict) else type(rdf).__name__
            raise _not_a_denoiser(path, f"it describes a {kind!r}, not a model")
        if not str(rdf.get("format_version", "")).startswith("0.5"):
            raise PairlessError(
                f"{str(path)!r} is a bioimage.io {rdf.get('format_version')} package; pairless reads spec 0.5"
                " (update it with `bioimageio update-format`)"
            )
        return rdf, archive, entries
    except BaseException:
        archive.close()
        raise


def load_bmz(
    path: str | os.PathLike, *, tile: int = DEFAULT_TILE, overlap: int = 32, tta: bool = False
) -> Denoiser:
    """Read a bioimage.io 0.5 denoiser package into a pairless denoiser, running nothing from the package.

    The network comes from the ``pytorch_state_dict`` entry when its architecture is one of
    pairless's networks (by class name, built from the package's kwargs; weights read with
    ``weights_only``), else from the ``onnx`` entry (ONNX Runtime, ``pairless[onnx]``).
    """
    path = Path(path)
    rdf, archive, entries = read_bmz(path)
    with contextlib.closing(archive):
        inputs, outputs = rdf.get("inputs") or [], rdf.get("outputs") or []
        if len(inputs) != 1 or len(outputs) != 1:
            raise _not_a_denoiser(
                path, f"it has {len(inputs)} inputs and {len(outputs)} outputs, not one of each"
            )
        in_axes, _ = _tensor_axes(inputs[0], path, "input")
        out_axes, _ = _tensor_axes(outputs[0], path, "output")
        if in_axes != out_axes:
            raise _not_a_denoiser(path, f"its output axes {out_axes} differ from its input axes {in_axes}")
        for axis in outputs[0]["axes"]:
            size = axis.get("size") if isinstance(axis, dict) and axis.get("type") == "space" else None
            if size is not None and not (
                isinstance(size, dict)
                and size.get("axis_id") == axis.get("id")
                and size.get("tensor_id") == inputs[0].get("id")
                and not size.get("offset")
                and size.get("scale", 1) in (1, 1.0)
            ):
                raise _not_a_denoiser(path, "its output is not the size of its input")
        ndim = len(in_axes)
        multiple = 1
        for axis in inputs[0]["axes"]:
            if isinstance(axis, dict) and axis.get("type") == "space" and isinstance(axis.get("size"), dict):
                multiple = max(
                    multiple, int(axis["size"].get("step") or 1)
                )  # sizes must be multiples of the step
        gain_in, offset_in = _affine(inputs[0].get("preprocessing"), path, "preprocessing")
        gain_out, offset_out = _affine(outputs[0].get("postprocessing"), path, "postprocessing")
        norm = Normalisation(-offset_in / gain_in, 1.0 / gain_in, gain_out, offset_out)
        ours = ((rdf.get("config") or {}).get("pairless") or {}).get("normalisation")
        if isinstance(ours, dict):  # pairless's exact values (the rdf's are their float-rounded inverses)
            exact = Normalisation(**{k: float(ours[k]) for k in Normalisation.__dataclass_fields__})
            if np.allclose(
                [exact.in_offset, exact.in_scale, exact.out_scale, exact.out_offset],
                [norm.in_offset, norm.in_scale, norm.out_scale, norm.out_offset],
                rtol=1e-5,
                atol=1e-8,
            ):
                norm = exact
        net, precision = _network(rdf.get("weights") or {}, archive, entries, path)
        return PackagedDenoiser(
            net,
            norm,
            spatial_ndim=ndim,
            multiple=multiple,
            tile=tile,
            overlap=overlap,
            tta=tta,
            precision=precision,
        )


def _network(weights: dict, archive, entries, path: Path) -> tuple[nn.Module, str]:
    formats = sorted(k for k, v in weights.items() if v)
    state_entry = weights.get("pytorch_state_dict")
    refusal = None
    if isinstance(state_entry, dict):
        arch = state_entry.get("architecture") or {}
        name = str(arch.get("callable", ""))
        cls = architectures().get(name)
        if cls is None or "import_from" in arch and not str(arch["import_from"]).startswith("pairless."):
            refusal = (
                "its pytorch_state_dict architecture"
                f" {arch.get('import_from', arch.get('source', ''))}:{name} is not one of pairless's networks"
                f" ({', '.join(sorted(architectures()))})"
            )
        else:
            net, refusal = _own_network(cls, name, arch.get("kwargs") or {})
            if net is not None:
                data = _read(archive, entries, state_entry.get("source", ""), path, state_entry.get("sha256"))
                state = _state_dict(data, str(state_entry.get("source", "")), path)
                _check_state_shapes(net, state, name)
                net.load_state_dict(state)
                return net.eval(), "auto"
    onnx_entry = weights.get("onnx")
    if isinstance(onnx_entry, dict):
        data = _read(archive, entries, onnx_entry.get("source", ""), path, onnx_entry.get("sha256"))
        return OnnxNet(data, path), "32"
    if refusal is None and formats and set(formats) <= {"torchscript"}:
        raise PairlessError(
            f"{str(path)!r} offers only TorchScript weights, which pairless never runs (TorchScript is code"
            " from the package); ask for a package with pytorch_state_dict or onnx weights"
        )
    why = refusal or f"its weight formats ({', '.join(formats) or 'none'}) are not ones pairless reads"
    raise PairlessError(
        f"{str(path)!r} cannot be loaded: {why}; pairless reads pytorch_state_dict weights of its own"
        " networks or onnx weights, and never imports a package's architecture source or runs its"
        " TorchScript"
    )


def _own_network(cls: type[nn.Module], name: str, kwargs) -> tuple[nn.Module | None, str | None]:
    """pairless's ``cls`` built from a package's kwargs, or ``(None, why not)`` (then ONNX may serve)."""
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    if (
        not isinstance(kwargs, dict)
        or not set(kwargs) <= accepted
        or not all(map(_json_value, kwargs.values()))
    ):
        return (
            None,
            (
                f"the kwargs of its architecture {name} ({kwargs}) are not those of pairless's {name} "
                f"({', '.join(sorted(accepted))}), so it is another network"
            ),
        )
    try:
        return cls(**kwargs), None
    except (TypeError, ValueError) as err:
        return None, f"pairless's {name} cannot be built from its kwargs {kwargs} ({err})"


def _state_dict(data: bytes, source: str, path: Path) -> dict[str, torch.Tensor]:
    try:
        if source.endswith(".safetensors"):
            from safetensors.torch import load as load_safetensors

            state = load_safetensors(data)
        else:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # weights_only refuses any pickle that is not plain tensors and containers
        raise PairlessError(
            f"the pytorch_state_dict weights {source!r} in {str(path)!r} are not a plain state dict "
            f"({str(err).splitlines()[0] if str(err) else type(err).__name__}); pairless loads weights only"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PairlessError(
            f"the weights {source!r} in {str(path)!r} are not a dict of tensors; the package is damaged"
        )
    return state


class OnnxNet(nn.Module):
    """A package's ONNX network in ONNX Runtime, called like a torch network (fp32)."""

    def __init__(self, model: bytes, path: Path):
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError:
            raise PairlessError(
                f"{str(path)!r} offers ONNX weights only here, and ONNX Runtime is not installed; "
                "pip install 'pairless[onnx]'"
            ) from None
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except Exception as err:
            raise PairlessError(
                f"the ONNX weights in {str(path)!r} cannot be read ({str(err).splitlines()[0]})"
            ) from None
        self.input_name = self.session.get_inputs()[0].name

    def __deepcopy__(self, memo):  # predict_tiled copies the network; the session is shared, read-only
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input_name: x.detach().float().cpu().contiguous().numpy()})[0]
        return torch.from_numpy(np.ascontiguousarray(out)).to(x.dtype)


def is_bmz(path: str | os.PathLike) -> bool:
    """Whether ``path`` is meant as a BMZ package (a ``.zip`` file), rather than a model folder or method."""
    return str(path).lower().endswith(".zip")
