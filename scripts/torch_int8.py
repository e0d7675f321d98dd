"""PyTorch's own int8 FCN (eager-mode static post-training quantization), for the benchmark.

The same network as torch_fcn.fcn_forward with the same split as the project's int8 path:
block1_conv1 runs in float32 and its output is quantized; every other convolution is
quantized (int8 weights per output channel, uint8 activations, ReLU fused); the score layers
dequantize, and the upsamplings and the skip additions run in float32. The quantized engine is
fbgemm where this torch has it, else onednn (PyTorch's x86 int8 through oneDNN).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.ao import quantization as tq

import torch_fcn


def engine():
    """fbgemm where built in (Debian's torch 1.13 is not), else onednn."""
    engines = torch.backends.quantized.supported_engines
    for e in ('fbgemm', 'x86', 'onednn'):
        if e in engines:
            return e
    raise SystemExit(f'torch_int8: no x86 quantized engine in this torch (has {engines})')


class ConvRelu(nn.Sequential):
    def __init__(self, kernel, bias, padding):
        conv = nn.Conv2d(kernel.shape[1], kernel.shape[0], kernel.shape[2], padding=padding)
        with torch.no_grad():
            conv.weight.copy_(kernel)
            conv.bias.copy_(bias)
        super().__init__(conv, nn.ReLU())


class Scorer(nn.Module):
    """A 1x1 score convolution on uint8 input with a float32 output."""

    def __init__(self, kernel, bias):
        super().__init__()
        self.conv = nn.Conv2d(kernel.shape[1], kernel.shape[0], 1)
        with torch.no_grad():
            self.conv.weight.copy_(kernel)
            self.conv.bias.copy_(bias)
        self.dequant = tq.DeQuantStub()

    def forward(self, t):
        return self.dequant(self.conv(t))


class Fcn8Int8(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.first = ConvRelu(p['block1_conv1.kernel'], p['block1_conv1.bias'], 1)
        self.first.qconfig = None  # float32, as in the project's int8 model
        self.quant = tq.QuantStub()
        self.blocks = nn.ModuleList()
        for b, nconv, _ in torch_fcn.VGG_BLOCKS:
            names = [f'block{b}_conv{i}' for i in range(1 if b > 1 else 2, nconv + 1)]
            self.blocks.append(nn.Sequential(*[ConvRelu(p[f'{n}.kernel'], p[f'{n}.bias'], 1) for n in names], nn.MaxPool2d(2, 2)))
        self.fc = nn.Sequential(ConvRelu(p['conv6.kernel'], p['conv6.bias'], 3), ConvRelu(p['conv7.kernel'], p['conv7.bias'], 0))
        self.scores = nn.ModuleDict({n: Scorer(p[f'{n}.kernel'], p[f'{n}.bias']) for n in ('score7', 'score4', 'score3')})
        self.up = {n: p[f'{n}.kernel'] for n in ('score7_upsample', 'skip4_upsample', 'fcn8')}

    def upsample(self, layer, t):
        k = torch_fcn.DECONV_KERNEL[layer]
        return F.conv_transpose2d(t, self.up[layer], stride=k // 2, padding=k // 4)

    def forward(self, x):
        h, w = int(x.shape[2]), int(x.shape[3])
        t = self.quant(self.first(x))
        pools = {}
        for b, block in enumerate(self.blocks, 1):
            t = block(t)
            pools[b] = t
        score = self.scores['score7'](self.fc(t))
        skip4 = self.upsample('score7_upsample', score) + self.scores['score4'](pools[4])
        skip3 = self.upsample('skip4_upsample', skip4) + self.scores['score3'](pools[3])
        return self.upsample('fcn8', skip3)[:, :, :h, :w]

    def fuse(self):
        for m in self.modules():
            if isinstance(m, ConvRelu) and m is not self.first:
                tq.fuse_modules(m, [['0', '1']], inplace=True)


def quantized_fcn8(p, calibration):
    """FCN-8s from torch-layout params p, quantized after calibrating on the given inputs."""
    torch.backends.quantized.engine = engine()
    model = Fcn8Int8(p).eval()
    model.fuse()
    model.qconfig = tq.get_default_qconfig(torch.backends.quantized.engine)
    model.first.qconfig = None
    tq.prepare(model, inplace=True)
    with torch.no_grad():
        for x in calibration:
            model(x)
    tq.convert(model, inplace=True)
    return model
