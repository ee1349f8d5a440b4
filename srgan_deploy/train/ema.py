"""An exponential moving average of the generator's weights (``--ema DECAY``).

Why: late in a run the weights wander around a minimum with the noise of each
small batch; their average sits closer to it than any single step, which is
what a lower learning rate buys, without paying the slower progress of a lower
learning rate. BN running statistics are averaged with the weights, so the
averaged model is evaluated with statistics that match it.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class WeightAverage:
    """A frozen copy of a model that trails it by ``1 / (1 - decay)`` steps.

    The first updates use a smaller decay, ``(1 + n) / (10 + n)``: a run that starts
    from random weights then averages over what it has, instead of holding on to the
    random start for thousands of steps."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay {decay} must be in (0, 1)")
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for param in self.model.parameters():
            param.requires_grad_(False)
        # state_dict tensors share storage with the parameters and buffers, which the optimizer, BN and
        # load_state_dict all change in place: pair them once instead of rebuilding both dicts every step
        source = model.state_dict()
        self._pairs = [(target, source[key]) for key, target in self.model.state_dict().items()]

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """One step of the average towards the model it was made from."""
        weight = 1.0 - self.current_decay()
        for target, value in self._pairs:
            if target.dtype.is_floating_point:
                target.lerp_(value, weight)
            else:  # BN's num_batches_tracked: a counter, not a quantity to average
                target.copy_(value)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "model": self.model.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])
