"""pairless: denoising of scientific and medical images without clean/noisy pairs.

The API (:mod:`pairless.api`): ``pairless.fit``, ``pairless.load``, ``pairless.denoise``,
``pairless.evaluate`` and ``pairless.export``.
"""

__version__ = "0.1.0"

from pairless.errors import PairlessError

_API = ("fit", "load", "denoise", "evaluate", "export")
__all__ = ["PairlessError", "__version__", *_API]


def __getattr__(name: str):
    # the API imports torch and the methods: loaded on first use, so that `pairless --help` stays fast
    if name in _API:
        from pairless import api

        return getattr(api, name)
    raise AttributeError(f"module 'pairless' has no attribute {name!r}")
