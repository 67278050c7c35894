"""ISCL: unpaired denoising by interdependent self-cooperative learning (Lee & Jeong, TMI 2021).

X is the noisy domain, Y the clean one; x and y are *unpaired* batches.  F: X→Y and G: Y→X are generators, H
extracts the noise map (n̂ = H(x), so x - n̂ is a second clean estimate), D_X and D_Y are discriminators.
Losses and step order follow the official TF code (github.com/leekanggeun/ISCL, ``models/trainer.py``; the TMI
paper's Fig. 2 (b)-(d) draws the same graphs).  The TMI equation numbers could not be checked, so the comments
name each term instead:

    ŷ = F(x),  x̂ = G(y),  n̂ = H(x),  ȳ = x - n̂,  x̄ = y + n̂   (x's noise moved onto y)

    D step   relu(1-D_X(x)) + relu(D_X(x̂)) + relu(1-D_Y(y)) + relu(D_Y(ŷ))      adversarial hinge
             + relu(D_X(x̄)) + relu(D_Y(ȳ))                                       boosting
    G step   -D_Y(ŷ) - D_X(x̂)                                                    adversarial
             + λ(|x - G(ŷ)| + |y - F(x̂)|                                          cycle
                 + |ŷ - ȳ| + |y - F(x̄)|)                                          bypass, λ = 30
    H step   |H(x) - (x - ŷ)|                                                     pseudo-noise label
             + |H(x̂) - (x̂ - y)|                                                   noise consistency

All terms are means.  Per batch the order is D → G → H; each step sees the networks it does not
train as constants, run in eval mode as the official code calls them (``training=False``: batch
norms use and do not update their running statistics, spectral norm skips its power iteration).
D's and H's optimizers are wrapped in Lookahead(6, 0.5) as in the official code.  The denoised
image is clip(γ·F(x) + (1-γ)·(x - H(x)), -1, 1) with γ = 0.5, in the clean set's [-1, 1] scale,
computed on the whole image (the official test runs one whole image at a time).

Deviation from the official code: no SWA on G (the official demo never applies the SWA average, so
it trains and tests the raw weights, as here).  The ``quick`` profile departs from the official
optimiser on purpose (Adam with a warm-up instead of RAdam decaying from the first step); see
``ISCLConfig.PROFILES``.

Where things are: ``config.py`` (settings and profiles), ``losses.py`` (the three losses),
``training.py`` (the module whose ``iterate`` is the D → G → H step, the monitors, the fit) and
``denoiser.py`` (the trained model applied to images).
"""

from pairless.methods.iscl.config import ISCLConfig
from pairless.methods.iscl.denoiser import ISCLDenoiser, load
from pairless.methods.iscl.training import train

CONFIG = ISCLConfig

__all__ = ["CONFIG", "ISCLConfig", "ISCLDenoiser", "load", "train"]
