"""The prior: a noise-level-aware denoiser trained once on clean public images, shipped with pairless.

Where things are: ``recipe.py`` (the training recipe: data, synthetic noise, the loss; ``pairless
pretrain``), ``calibrated.py`` (the prior fitted to one image's intensity scale and noise),
``denoiser.py`` (zero-shot denoising, ``pairless denoise prior``), ``vst.py`` (the learned
variance-stabilising transform, ``--vst learned``), ``adapt.py`` (test-time adaptation, ``--adapt``)
and ``shipped.py`` (the weights in the package and their provenance).  The network is
:class:`pairless.nets.prior_net.PriorNet`.
"""

from __future__ import annotations

from pairless.errors import PairlessError
from pairless.methods.prior.calibrated import CalibratedPrior
from pairless.methods.prior.denoiser import PriorDenoiser
from pairless.methods.prior.recipe import PriorConfig, build, pretrain

CONFIG = PriorConfig


def load(config: dict, weights: dict, **options) -> PriorDenoiser:
    """The zero-shot denoiser of a ``pairless pretrain`` model folder; ``options`` are
    :class:`PriorDenoiser`'s."""
    _, net = build(config)
    try:
        net.load_state_dict(weights)
    except RuntimeError as err:
        raise PairlessError(
            f"the prior's weights do not match its config.yaml ({str(err).splitlines()[0]}); the model folder"
            " is damaged: train it again with `pairless pretrain`"
        ) from None
    return PriorDenoiser(CalibratedPrior(net), **options)


def shipped_net():
    """The shipped prior's network (:mod:`pairless.methods.prior.shipped`), in eval mode."""
    from pairless.methods.prior.shipped import load_shipped

    config, weights = load_shipped()
    _, net = build(config)
    net.load_state_dict(weights)
    return net.eval()


__all__ = ["CONFIG", "CalibratedPrior", "PriorConfig", "PriorDenoiser", "load", "pretrain", "shipped_net"]
