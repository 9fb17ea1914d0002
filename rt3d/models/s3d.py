"""S3D (Xie et al., 2018) with torchvision's architecture: separable (1xkxk then kx1x1) convs in inception blocks."""
from __future__ import annotations

import torch
from torch import nn


def conv_bn_relu(cin, cout, k, s=1, p=0) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, k, s, p, bias=False), nn.BatchNorm3d(cout, eps=1e-3, momentum=1e-3),
                         nn.ReLU(inplace=True))


def sep_conv(cin, cout, k, s, p) -> nn.Sequential:
    return nn.Sequential(conv_bn_relu(cin, cout, (1, k, k), (1, s, s), (0, p, p)),
                         conv_bn_relu(cout, cout, (k, 1, 1), (s, 1, 1), (p, 0, 0)))


class SepInception(nn.Module):
    def __init__(self, cin, b0, b1m, b1, b2m, b2, b3):
        super().__init__()
        self.branch0 = conv_bn_relu(cin, b0, 1)
        self.branch1 = nn.Sequential(conv_bn_relu(cin, b1m, 1), sep_conv(b1m, b1, 3, 1, 1))
        self.branch2 = nn.Sequential(conv_bn_relu(cin, b2m, 1), sep_conv(b2m, b2, 3, 1, 1))
        self.branch3 = nn.Sequential(nn.MaxPool3d(3, 1, 1), conv_bn_relu(cin, b3, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)


_BLOCKS = [(192, 64, 96, 128, 16, 32, 32), (256, 128, 128, 192, 32, 96, 64), "pool3",
           (480, 192, 96, 208, 16, 48, 64), (512, 160, 112, 224, 24, 64, 64), (512, 128, 128, 256, 24, 64, 64),
           (512, 112, 144, 288, 32, 64, 64), (528, 256, 160, 320, 32, 128, 128), "pool2",
           (832, 256, 160, 320, 32, 128, 128), (832, 384, 192, 384, 48, 128, 128)]


class S3D(nn.Module):
    """S3D for 1x3x16x224x224 clips (torchvision's s3d); ``width`` scales channels, ``input_size`` sets the pool."""

    def __init__(self, num_classes: int = 400, width: float = 1.0, input_size=(16, 224, 224)):
        super().__init__()
        sc = lambda c: max(2, int(c * width))  # noqa: E731
        layers = [sep_conv(3, sc(64), 7, 2, 3), nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
                  conv_bn_relu(sc(64), sc(64), 1), sep_conv(sc(64), sc(192), 3, 1, 1),
                  nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))]
        cin = sc(192)
        for b in _BLOCKS:
            if b == "pool3":
                layers.append(nn.MaxPool3d(3, 2, 1))
            elif b == "pool2":
                layers.append(nn.MaxPool3d(2, 2, 0))
            else:  # channel counts follow the scaled outputs of the previous block
                outs = [sc(c) for c in b[1:]]
                layers.append(SepInception(cin, *outs))
                cin = outs[0] + outs[2] + outs[4] + outs[5]
        self.features = nn.Sequential(*layers)
        t, h, w = input_size
        self.avgpool = nn.AvgPool3d((max(1, t // 8), max(1, h // 32), max(1, w // 32)), stride=1)
        self.dropout = nn.Dropout(0.2)
        self.classifier = nn.Conv3d(cin, num_classes, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.classifier(self.dropout(self.avgpool(self.features(x))))
        return torch.mean(x, dim=(2, 3, 4))
