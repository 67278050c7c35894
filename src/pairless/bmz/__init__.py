"""BioImage Model Zoo packages (bioimage.io model spec 0.5): export a pairless model, import one safely.

:func:`export_bmz` turns a model folder into a ``.zip`` the BMZ tools (bioimageio.core, ilastik,
deepImageJ, the napari BMZ plugin) understand: ``rdf.yaml`` with axes and tiling hints (the
spatial sizes the network accepts and a halo equal to its measured reach), the weights three ways
(``pytorch_state_dict`` with the architecture's source file, ``torchscript`` and ``onnx``), a test
input and its expected output, a cover image, a README, citations and a licence.  The export works
for every learned method whose denoiser is "normalise, run ``.net`` tile by tile, de-normalise"
(N2V and the other self-supervised methods, the supervised baselines); it checks this on the test
input and refuses any other.

:func:`load_bmz` reads such a package into a pairless denoiser **without running anything from
it**: the network is pairless's own class, chosen by the package's architecture name and built
from its keyword arguments, and the weights are read with ``torch.load(weights_only=True)`` (or
safetensors), or the package's ONNX file runs in ONNX Runtime.  A package's architecture source and
its TorchScript are never imported or run.  Nothing is written while loading, and a zip with an
absolute or ``..`` entry is refused whole.
"""

from pairless.bmz.export import export_bmz
from pairless.bmz.load import is_bmz, load_bmz, read_bmz

__all__ = ["export_bmz", "is_bmz", "load_bmz", "read_bmz"]
