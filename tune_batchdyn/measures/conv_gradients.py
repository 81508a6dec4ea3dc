"""Per-sample gradients of a convolution, without im2col where the geometry allows.

For a Conv2d call with padded input x (B, C, Hp, Wp), output gradient g (B, O, Ho, Wo), kernel
(kh, kw), dilation (dh, dw), K groups and equal strides s, the weight gradient of sample i at
kernel offset (a, b) is

    ψ_i[o, c, a, b] = Σ_{u,v} g_i[o, u, v] · x_i[c, s·u + a·dh, s·v + b·dw].

Padding g with zero columns to the input's width Wp, the positions (u, v) become one flat
index n = u·Wp + v (up to the last output pixel, L = (Ho − 1)·Wp + Wo), and the input elements
they meet become the flat slice x_flat[c, a·dh·Wp + b·dw + s·n]: a strided *view* of the
input, within its bounds for every valid geometry. So each kernel offset costs one
batched product (C × L)(L × O) with L = Ho·Wp and no unfolded copy of the input (im2col
would write kh·kw copies); for s = 1 the view is contiguous along L. The offsets touch disjoint
parameters, so their Gram shares simply add. Strided layers, every layer off the CPU and,
on the CPU, layers with the channel counts oneDNN handles well instead take ψ as the weight
gradient of one grouped convolution (B·K groups): it skips the positions the stride jumps,
and on a GPU one cuDNN call beats kh·kw products and their Grams (`shifted_windows_pay_off`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from tune_batchdyn.measures.positions import Factor


def shifted_windows_pay_off(stride: tuple[int, int], channels_per_group: int,
                            device: torch.device) -> bool:
    """Shifted windows or one grouped convolution for ψ, from what was measured (B = 128):

    - strided layers: grouped, on any device (windows step over the skipped positions);
    - off the CPU: grouped. On an H200 cuDNN's grouped weight gradient with its Gram takes
      0.12-0.29 ms per resnet20 layer against 0.6-3.1 ms for nine windows and their Grams
      (there every kernel launch costs about as much as its work);
    - on the CPU: grouped for 8, 16, 24 or 32 input channels per group, where oneDNN's
      kernel took 0.25-0.85x the windows' time (1 and 2 threads, AVX-512; 0.93-1.01x for 32
      channels on 8×8 pixels); windows otherwise: 1.1-2.9x for 3, 4 and 12 channels,
      0.9-1.0x for 64, 1.7-1.9x for 128.
    """
    if tuple(stride) != (1, 1) or device.type != "cpu":
        return False
    return not (channels_per_group % 8 == 0 and channels_per_group <= 32)


@dataclass(frozen=True)
class ConvCall:
    """One call of a Conv1d/Conv2d (Conv1d as height 1). Symmetric zero padding is kept as
    ``padding`` and applied only where a product needs it padded (the shifted windows): the
    grouped convolution and im2col take it as an argument, which saves a padded copy of
    the input (a fill and a copy per layer: 1.9 ms of CPU time per resnet20 Gram on an H200);
    other padding is already applied."""

    input: Tensor  #: (B, C, H, W), with any padding other than ``padding`` applied
    output_grads: Tensor  #: (B, O, Ho, Wo)
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    weight: bool  #: the weight is trainable
    bias: bool  #: there is a trainable bias
    padding: tuple[int, int] = (0, 0)  #: zeros still to add on each side (height, width)

    @property
    def padded_input(self) -> Tensor:
        """(B, C, Hp, Wp): the input with all its padding."""
        if not any(self.padding):
            return self.input
        height, width = self.padding
        return F.pad(self.input, (width, width, height, height))

    def sizes(self) -> tuple[int, int, int, int, int]:
        """(B, K, T, p, q) of the positions form: p per group with the bias column."""
        batch, channels = self.input.shape[:2]
        outputs, height, width = self.output_grads.shape[1:]
        kernel = self.kernel_size[0] * self.kernel_size[1]
        p = (channels // self.groups) * kernel * int(self.weight) + int(self.bias)
        return batch, self.groups, height * width, p, outputs // self.groups

    def factor(self) -> Factor:
        """The positions form by im2col: A = unfolded patches, G = output gradient."""
        batch = self.input.shape[0]
        patches = F.unfold(self.input, self.kernel_size, dilation=self.dilation,
                           padding=self.padding, stride=self.stride)  # (B, C·kh·kw, T)
        positions = patches.shape[-1]
        a = patches.view(batch, self.groups, -1, positions).transpose(2, 3)  # (B, K, T, p)
        if not self.weight:
            a = a[..., :0]
        g = self.output_grads.reshape(batch, self.groups, -1, positions).transpose(2, 3)
        return Factor(a, g, bias=self.bias)

    def bias_gradients(self) -> Tensor:
        """ψ of the bias: Σ over output pixels, (B, O)."""
        return self.output_grads.sum(dim=(2, 3))

    def weight_gradient_blocks(self) -> Iterator[Tensor]:
        """ψ of the weight in blocks of disjoint parameters, each (B, P_block): by shifted
        windows or as one grouped convolution's weight gradient (`shifted_windows_pay_off`)."""
        channels = self.input.shape[1] // self.groups
        if shifted_windows_pay_off(self.stride, channels, self.input.device):
            yield from self._shifted_window_blocks()
        else:
            yield self.grouped_weight_gradients()

    def grouped_weight_gradients(self) -> Tensor:
        """ψ (B, P) as the weight gradient of one convolution with B·K groups, sample i's
        input channels against sample i's output gradient (the batching rule torch.func uses
        for convolutions). For strided layers it beats shifted windows, which step over the
        skipped positions (resnet20's stride-2 layers at B = 128 on the CPU: 2-4x less time
        for ψ). Only the weight's shape is used (a broadcast placeholder stands for it)."""
        x, g = self.input, self.output_grads
        batch, channels = x.shape[:2]
        outputs = g.shape[1]
        weight = x.new_empty(1).expand(batch * outputs, channels // self.groups,
                                       *self.kernel_size)
        _, psi, _ = torch.ops.aten.convolution_backward(
            g.reshape(1, batch * outputs, *g.shape[2:]),
            x.reshape(1, batch * channels, *x.shape[2:]),
            weight, None, self.stride, self.padding, self.dilation, False, (0, 0),
            batch * self.groups, (False, True, False),
        )
        return psi.reshape(batch, -1)

    def _shifted_window_blocks(self) -> Iterator[Tensor]:
        x, g = self.padded_input, self.output_grads
        batch, channels, height, width = x.shape
        outputs, out_height, out_width = g.shape[1:]
        groups, step = self.groups, self.stride[0]
        per_group = outputs // groups
        # flat positions n = u·Wp + v up to the last output pixel; g is zero for v >= Wo
        length = (out_height - 1) * width + out_width
        g_columns = g.new_empty(batch * groups, out_height * width, per_group)
        rows = g_columns.view(batch * groups, out_height, width, per_group)
        rows[:, :, :out_width].copy_(
            g.reshape(batch * groups, per_group, out_height, out_width).permute(0, 2, 3, 1)
        )
        rows[:, :, out_width:].zero_()
        g_columns = g_columns[:, :length]  # (B·K, L, O/K)
        last_offset = (self.kernel_size[0] - 1) * self.dilation[0] * width + (
            self.kernel_size[1] - 1
        ) * self.dilation[1]
        x_flat = x.reshape(batch, channels, height * width)
        needed = last_offset + step * (length - 1) + 1
        if needed > height * width:
            x_flat = F.pad(x_flat, (0, needed - height * width))
        x_flat = x_flat.contiguous()
        span = x_flat.shape[-1]
        size = (batch * groups, channels // groups, length)
        strides = ((channels // groups) * span, span, step)
        for a in range(self.kernel_size[0]):
            for b in range(self.kernel_size[1]):
                offset = a * self.dilation[0] * width + b * self.dilation[1]
                window = x_flat.as_strided(size, strides, x_flat.storage_offset() + offset)
                psi = torch.bmm(window, g_columns)  # (B·K, C/K, O/K)
                yield psi.reshape(batch, -1)
