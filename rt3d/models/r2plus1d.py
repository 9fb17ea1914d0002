"""R(2+1)D-18 (Tran et al., 2018) with torchvision's architecture: each 3x3x3 conv split into 1x3x3 then 3x1x1."""
from __future__ import annotations

import torch
from torch import nn


def _bn_relu(c: int) -> list[nn.Module]:
    return [nn.BatchNorm3d(c), nn.ReLU(inplace=True)]


class Conv2Plus1D(nn.Sequential):
    def __init__(self, cin: int, cout: int, mid: int, stride: int = 1):
        super().__init__(
            nn.Conv3d(cin, mid, (1, 3, 3), (1, stride, stride), (0, 1, 1), bias=False), *_bn_relu(mid),
            nn.Conv3d(mid, cout, (3, 1, 1), (stride, 1, 1), (1, 0, 0), bias=False))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        mid = (cin * cout * 3 * 3 * 3) // (cin * 3 * 3 + 3 * cout)  # keeps the parameter count of a 3x3x3 conv
        self.conv1 = nn.Sequential(Conv2Plus1D(cin, cout, mid, stride), *_bn_relu(cout))
        self.conv2 = nn.Sequential(Conv2Plus1D(cout, cout, mid), nn.BatchNorm3d(cout))
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv3d(cin, cout, 1, stride, bias=False), nn.BatchNorm3d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + identity)


class R2Plus1D(nn.Module):
    """R(2+1)D-18; ``width`` scales channels (1.0 is torchvision's r2plus1d_18), ``blocks`` the blocks per stage."""

    def __init__(self, num_classes: int = 400, width: float = 1.0, blocks=(2, 2, 2, 2)):
        super().__init__()
        ch = [max(4, int(c * width)) for c in (64, 128, 256, 512)]
        stem_mid = max(4, int(45 * width))
        self.stem = nn.Sequential(
            nn.Conv3d(3, stem_mid, (1, 7, 7), (1, 2, 2), (0, 3, 3), bias=False), *_bn_relu(stem_mid),
            nn.Conv3d(stem_mid, ch[0], (3, 1, 1), 1, (1, 0, 0), bias=False), *_bn_relu(ch[0]))
        stages, cin = [], ch[0]
        for i, (c, n) in enumerate(zip(ch, blocks)):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(*[BasicBlock(cin if j == 0 else c, c, stride if j == 0 else 1)
                                          for j in range(n)]))
            cin = c
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(torch.flatten(self.avgpool(x), 1))
