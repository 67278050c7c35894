"""ISCL's three losses, one per step (D, then G = F and G together, then H), as the official code computes
them."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from pairless.nets.iscl import (
    ISCLNets,
)


def _l1(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).abs().mean()


@contextlib.contextmanager
def eval_mode(*modules: nn.Module):
    """Run ``modules`` in eval mode (the official ``training=False``), restoring their modes after.

    The networks a step does not train are evaluated, not trained: a batch norm in F must neither
    normalise generated batches by their own statistics nor fold them into its running averages.
    """
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


def discriminator_loss(nets: ISCLNets, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """D step: hinge on real vs generated, plus boosting (H-made pseudo samples are fakes too)."""
    with torch.no_grad(), eval_mode(nets.F, nets.G, nets.H):
        y_hat, x_hat, n_hat = nets.F(x), nets.G(y), nets.H(x)
    y_bar, x_bar = x - n_hat, y + n_hat
    adversarial = (
        nnf.relu(1 - nets.D_X(x)).mean()
        + nnf.relu(nets.D_X(x_hat)).mean()
        + nnf.relu(1 - nets.D_Y(y)).mean()
        + nnf.relu(nets.D_Y(y_hat)).mean()
    )
    boosting = nnf.relu(nets.D_X(x_bar)).mean() + nnf.relu(nets.D_Y(y_bar)).mean()
    return {"loss_d": adversarial + boosting, "adversarial_d": adversarial, "boosting": boosting}


def generator_loss(nets: ISCLNets, x: Tensor, y: Tensor, *, lam: float) -> dict[str, Tensor]:
    """G step (F and G together): adversarial + λ·(cycle + bypass), the "nested" loss."""
    with torch.no_grad(), eval_mode(nets.H):
        n_hat = nets.H(x)
    y_hat, x_hat = nets.F(x), nets.G(y)
    y_bar, x_bar = x - n_hat, y + n_hat
    with eval_mode(nets.D_X, nets.D_Y):  # official: DX/DY(training=False) in the G step
        adversarial = -nets.D_Y(y_hat).mean() - nets.D_X(x_hat).mean()
    cycle = _l1(x, nets.G(y_hat)) + _l1(y, nets.F(x_hat))
    bypass = _l1(y_hat, y_bar) + _l1(y, nets.F(x_bar))
    return {
        "loss_g": adversarial + lam * (cycle + bypass),
        "adversarial_g": adversarial,
        "cycle": cycle,
        "bypass": bypass,
        # collapse monitors: H → 0 and F → identity together mean nothing is removed
        "h_norm": n_hat.abs().mean().detach(),
        "f_residual": (y_hat - x).abs().mean().detach(),
    }


def extractor_loss(nets: ISCLNets, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """H step: F's residual labels H's noise on x; on G's fakes the added noise is known exactly."""
    with torch.no_grad(), eval_mode(nets.F, nets.G):
        y_hat, x_hat = nets.F(x), nets.G(y)
    pseudo = _l1(nets.H(x), x - y_hat)
    consistency = _l1(nets.H(x_hat), x_hat - y)
    return {"loss_h": pseudo + consistency, "pseudo_noise": pseudo, "noise_consistency": consistency}


@contextlib.contextmanager
def frozen(*modules: nn.Module):
    """Skip parameter gradients of networks a step does not train (they still pass gradients on)."""
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
