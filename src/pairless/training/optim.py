"""Lookahead (Zhang et al., NeurIPS 2019), as ``tfa.optimizers.Lookahead`` wraps ISCL's D and H optimizers.

The wrapped ("fast") optimizer steps as usual; every ``sync_period`` steps the slow copy of each
parameter moves ``slow_step_size`` of the way towards the fast one and the fast weights are reset
to it: ``slow ← slow + α(fast − slow); fast ← slow``.  The slow copy starts at the parameters'
values when the wrapper is built, as tfa's slot initialisation does.  Between syncs the fast
weights are what the networks use (as in tfa), so a sync every 6 steps halves how far D and H
move per 6 steps and damps their oscillation against the generators.
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer


class Lookahead(Optimizer):
    """Wraps ``base`` (any torch optimizer); ``param_groups`` are the base's, so LR schedulers act on it.

    Parameters
    ----------
    base
        The fast optimizer (here RAdam or Adam).
    sync_period
        k: fast steps between two syncs (tfa's default and ISCL's: 6).
    slow_step_size
        α ∈ (0, 1]: how far the slow weights move towards the fast ones at a sync (ISCL: 0.5).
        α = 1 makes the wrapper a no-op.
    """

    def __init__(self, base: Optimizer, *, sync_period: int = 6, slow_step_size: float = 0.5):
        if sync_period < 1:
            raise ValueError(f"Lookahead sync_period must be ≥ 1, got {sync_period}")
        if not 0.0 < slow_step_size <= 1.0:
            raise ValueError(f"Lookahead slow_step_size must be in (0, 1], got {slow_step_size}")
        self.base = base
        self.sync_period = sync_period
        self.slow_step_size = slow_step_size
        # share the base's groups and defaults so that LR schedulers and Lightning see one optimizer;
        # Optimizer.__init__ is not called: it would build new groups from copies of the parameters
        self.defaults = base.defaults
        self.param_groups = base.param_groups
        self.state = base.state
        self._optimizer_step_pre_hooks = {}
        self._optimizer_step_post_hooks = {}
        self._optimizer_state_dict_pre_hooks = {}
        self._optimizer_state_dict_post_hooks = {}
        self._optimizer_load_state_dict_pre_hooks = {}
        self._optimizer_load_state_dict_post_hooks = {}
        self.fast_steps = 0
        self.slow = [p.detach().clone() for group in self.param_groups for p in group["params"]]

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    @torch.no_grad()
    def sync(self) -> None:
        """Move the slow weights towards the fast ones and reset the fast weights to them."""
        for slow, fast in zip(self.slow, self._params()):
            slow.add_(fast.detach() - slow, alpha=self.slow_step_size)
            fast.copy_(slow)

    def step(self, closure=None):
        loss = self.base.step(closure)
        self.fast_steps += 1
        if self.fast_steps % self.sync_period == 0:
            self.sync()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {
            "base": self.base.state_dict(),
            "slow": [s.clone() for s in self.slow],
            "fast_steps": self.fast_steps,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self.base.load_state_dict(state_dict["base"])
        self.param_groups = self.base.param_groups
        self.state = self.base.state
        with torch.no_grad():
            for slow, saved in zip(self.slow, state_dict["slow"]):
                slow.copy_(saved)
        self.fast_steps = int(state_dict["fast_steps"])

    def __repr__(self) -> str:
        return (
            f"Lookahead(sync_period={self.sync_period}, slow_step_size={self.slow_step_size},"
            f" base={self.base!r})"
        )
