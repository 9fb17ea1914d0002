"""C3D (Tran et al., 2015): eight 3x3x3 convs, five pools, three fully connected layers."""
from __future__ import annotations

import torch
from torch import nn

# (name, out channels, pool after it: (kernel, stride, padding) or None)
_FULL = [("conv1", 64, ((1, 2, 2), (1, 2, 2), 0)), ("conv2", 128, ((2, 2, 2), (2, 2, 2), 0)),
         ("conv3a", 256, None), ("conv3b", 256, ((2, 2, 2), (2, 2, 2), 0)),
         ("conv4a", 512, None), ("conv4b", 512, ((2, 2, 2), (2, 2, 2), 0)),
         ("conv5a", 512, None), ("conv5b", 512, ((2, 2, 2), (2, 2, 2), (0, 1, 1)))]


class C3D(nn.Module):
    """C3D for clips of shape (N, 3, T, H, W); ``width`` scales every layer (1.0 is the published network).
    ``bn`` puts a BatchNorm after every conv (the published C3D has none; small C3Ds train far more easily with it,
    and rt3d folds it into the conv)."""

    def __init__(self, num_classes: int = 487, width: float = 1.0, input_size=(16, 112, 112), fc_width: int = 4096,
                 bn: bool = False, dropout: float = 0.5):
        super().__init__()
        layers, c = [], 3
        t, h, w = input_size
        for name, out, pool in _FULL:
            out = max(4, int(out * width))
            layers += [nn.Conv3d(c, out, 3, padding=1, bias=not bn)] + ([nn.BatchNorm3d(out)] if bn else [])
            layers.append(nn.ReLU(inplace=True))
            if pool:
                k, s, p = pool
                layers.append(nn.MaxPool3d(k, s, p))
                p = (p,) * 3 if isinstance(p, int) else p
                t, h, w = [(d + 2 * pp - kk) // ss + 1 for d, kk, ss, pp in zip((t, h, w), k, s, p)]
            c = out
        self.features = nn.Sequential(*layers)
        fc = max(16, int(fc_width * width)) if width < 1 else fc_width
        self.classifier = nn.Sequential(
            nn.Linear(c * t * h * w, fc), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(fc, fc), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(fc, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))
