"""DnCNN (Zhang et al., IEEE TIP 2017): a plain conv stack with batch norm that predicts the noise.

Layer 1 is conv + ReLU, layers 2 … depth-1 are conv + BN + ReLU, the last layer is a conv to one
channel; all 3×3 with zero padding, so any input size works.  Residual learning: the network
outputs ``y - R(y)``, where ``R`` is the stack's noise estimate.
"""

from __future__ import annotations

from torch import Tensor, nn


class DnCNN(nn.Module):
    """DnCNN for one-channel images; ``depth`` 17 and ``channels`` 64 are the paper's (DnCNN-S)."""

    multiple = 1  # no down-sampling: tiles may start anywhere

    def __init__(self, *, depth: int = 17, channels: int = 64):
        super().__init__()
        if depth < 2:
            raise ValueError("DnCNN needs depth >= 2")
        layers: list[nn.Module] = [nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [
                nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.Conv2d(channels, 1, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, y: Tensor) -> Tensor:
        return y - self.body(y)
