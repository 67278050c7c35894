"""pairless: denoising of scientific and medical images without clean/noisy pairs."""

__version__ = "0.1.0"

from pairless.errors import PairlessError

__all__ = ["PairlessError", "__version__"]
