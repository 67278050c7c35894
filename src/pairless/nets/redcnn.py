"""RED-CNN (Chen et al., IEEE TMI 2017): residual encoder-decoder for low-dose CT.

Five 5×5 convolutions without padding (each shrinks the image by 4 pixels) and five 5×5
transposed convolutions that grow it back, ``channels`` filters each, ReLU after every layer.
Three shortcuts add encoder activations to the decoder: the output of conv 4 after deconv 1, that
of conv 2 after deconv 3, and the input after deconv 5, each sum followed by the ReLU; so the
output has the input's size and is non-negative (images are assumed scaled to start at 0).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class REDCNN(nn.Module):
    """RED-CNN for one-channel images; 96 filters of 5×5 as in the paper."""

    multiple = 1

    def __init__(self, *, channels: int = 96):
        super().__init__()
        self.enc = nn.ModuleList([nn.Conv2d(1 if i == 0 else channels, channels, 5) for i in range(5)])
        self.dec = nn.ModuleList(
            [nn.ConvTranspose2d(channels, 1 if i == 4 else channels, 5) for i in range(5)]
        )

    def forward(self, x: Tensor) -> Tensor:
        relu = torch.relu
        e1 = relu(self.enc[0](x))
        e2 = relu(self.enc[1](e1))
        e3 = relu(self.enc[2](e2))
        e4 = relu(self.enc[3](e3))
        e5 = relu(self.enc[4](e4))
        d = relu(self.dec[0](e5) + e4)
        d = relu(self.dec[1](d))
        d = relu(self.dec[2](d) + e2)
        d = relu(self.dec[3](d))
        return relu(self.dec[4](d) + x)
