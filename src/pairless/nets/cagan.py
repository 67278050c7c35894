"""CaGAN's networks (Huang et al., IEEE TCI 2020): generators and discriminators with criss-cross
self-attention (CCSA) and channel attention (CA).

No official code exists; the layout follows the unofficial TF port by K. Lee (github.com/leekanggeun/CaGAN
``models/network.py``, ``utils/attention_module.py``), the only implementation there is, with one
difference on purpose: :class:`CrissCrossAttention` is the published operator (Huang et al., CCNet,
ICCV 2019), in which a pixel attends to its row and its column and counts itself once.  The port adds
+3.4e38 where CCNet adds -∞ (the column branch's diagonal), which makes its softmax one-hot on the
pixel itself, so the port's attention reduces to a gated 1×1 convolution.

* :class:`Generator`: a feature extraction network of ``depth`` 3×3 convs whose outputs are all
  concatenated and re-weighted by CA; three branches (1×1 | 1×1 → 3×3 | 1×1 → 5×5), each followed by
  CCSA; three 3×3 convs to one channel (LeakyReLU on the last one too, as in the port); plus the 3×3
  mean of the input (reflect padding) as a global residual.  No normalization; LeakyReLU(0.2).
* :class:`Discriminator`: six 3×3 convs (stride 1, 2, 1, 2, 1, 2; widths w, w, 2w, 2w, 4w, 4w), CCSA,
  a dense layer of 1024 on the flattened map (8×8 for the port's 64×64 patches) and one logit, so it
  takes inputs of one size only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn


class CrissCrossAttention(nn.Module):
    """out = γ·Σ_{j ∈ row(i) ∪ column(i)} softmax_j(q_i·k_j) v_j + x, the pixel itself counted once; γ
    starts at 0 (the block is the identity at initialisation).  q and k have C/8 channels, v has C."""

    def __init__(self, channels: int):
        super().__init__()
        inner = max(channels // 8, 1)
        self.q, self.k = nn.Conv2d(channels, inner, 1), nn.Conv2d(channels, inner, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.q(x), self.k(x), self.v(x)
        # column branch: each (batch, column) is a sequence of h pixels; row branch: of w pixels
        q_col = q.permute(0, 3, 2, 1).reshape(b * w, h, -1)
        k_col = k.permute(0, 3, 1, 2).reshape(b * w, -1, h)
        q_row = q.permute(0, 2, 3, 1).reshape(b * h, w, -1)
        k_row = k.permute(0, 2, 1, 3).reshape(b * h, -1, w)
        e_col = torch.bmm(q_col, k_col).view(b, w, h, h).permute(0, 2, 1, 3)  # (b, h, w, h)
        # the pixel is in both its row and its column: leave it out of the column branch
        e_col = e_col.masked_fill(
            torch.eye(h, dtype=torch.bool, device=x.device).view(1, h, 1, h), -torch.inf
        )
        e_row = torch.bmm(q_row, k_row).view(b, h, w, w)  # (b, h, w, w)
        attention = torch.softmax(torch.cat([e_col, e_row], -1), -1)
        a_col = attention[..., :h].permute(0, 2, 1, 3).reshape(b * w, h, h)
        a_row = attention[..., h:].reshape(b * h, w, w)
        v_col = v.permute(0, 3, 2, 1).reshape(b * w, h, c)
        v_row = v.permute(0, 2, 3, 1).reshape(b * h, w, c)
        out_col = torch.bmm(a_col, v_col).view(b, w, h, c).permute(0, 3, 2, 1)
        out_row = torch.bmm(a_row, v_row).view(b, h, w, c).permute(0, 3, 1, 2)
        return self.gamma * (out_col + out_row) + x


class ChannelAttention(nn.Module):
    """x·sigmoid(W₂ relu(W₁ GAP(x))), reduction 4 (the port's)."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        self.down = nn.Conv2d(channels, channels // reduction, 1)
        self.up = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.up(torch.relu(self.down(x.mean((2, 3), keepdim=True)))))


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2)


class Generator(nn.Module):
    multiple = 1  # no down-sampling

    def __init__(self, width: int = 64, depth: int = 12):
        super().__init__()
        w = width
        self.features = nn.ModuleList(
            [nn.Conv2d(1, w, 3, padding=1)] + [nn.Conv2d(w, w, 3, padding=1) for _ in range(depth - 1)]
        )
        self.attention = ChannelAttention(depth * w)
        self.branches = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(depth * w, w, 1), _act(), CrissCrossAttention(w)),
                nn.Sequential(
                    nn.Conv2d(depth * w, w, 1),
                    _act(),
                    nn.Conv2d(w, w, 3, padding=1),
                    _act(),
                    CrissCrossAttention(w),
                ),
                nn.Sequential(
                    nn.Conv2d(depth * w, w, 1),
                    _act(),
                    nn.Conv2d(w, w, 5, padding=2),
                    _act(),
                    CrissCrossAttention(w),
                ),
            ]
        )
        self.tail = nn.Sequential(
            nn.Conv2d(3 * w, w, 3, padding=1), _act(),
            nn.Conv2d(w, w, 3, padding=1), _act(),
            nn.Conv2d(w, 1, 3, padding=1), _act(),
        )  # fmt: skip
        self.act = _act()

    def forward(self, x: Tensor) -> Tensor:
        h, outputs = x, []
        for conv in self.features:
            h = self.act(conv(h))
            outputs.append(h)
        h = self.attention(torch.cat(outputs, 1))
        h = torch.cat([branch(h) for branch in self.branches], 1)
        mean3 = nnf.avg_pool2d(nnf.pad(x, (1, 1, 1, 1), mode="reflect"), 3, 1)
        return self.tail(h) + mean3


class Discriminator(nn.Module):
    def __init__(self, width: int = 64, size: int = 64):
        super().__init__()
        w = width
        plan = ((1, w, 1), (w, w, 2), (w, 2 * w, 1), (2 * w, 2 * w, 2), (2 * w, 4 * w, 1), (4 * w, 4 * w, 2))
        layers: list[nn.Module] = []
        for cin, cout, stride in plan:
            layers += [nn.Conv2d(cin, cout, 3, stride, 1), _act()]
        self.conv = nn.Sequential(*layers)
        self.attention = CrissCrossAttention(4 * w)
        self.head = nn.Sequential(nn.Linear(4 * w * (size // 8) ** 2, 1024), _act(), nn.Linear(1024, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.attention(self.conv(x)).flatten(1))
