"""bf16 autocast numerics emulated with fp32 kernels (``amp: bf16-emulated``): a check of what bf16
training does to accuracy on a machine without bf16 units, where real bf16 runs 2-12x slower.

Not a speed option (it runs ~1.2x slower than fp32). It imitates ``torch.autocast(dtype=bfloat16)``
as oneDNN's bf16 kernels and AMX compute it: the operands of every matrix product (convolutions,
``mm``/``addmm``/``bmm``, forward and backward) are rounded to bf16 and multiplied with fp32
accumulation; the result of every op, forward and backward, is rounded to bf16 as if stored in
bf16 - except the saved statistics and parameter gradients of batch norm, which the mixed-type
bf16 batch norm keeps in fp32. Parameters, their update (the optimizer runs outside) and the
batch-norm running statistics stay fp32, as under autocast. Unlike autocast, the backward of the
fp32 loss is rounded too (a slightly stricter test). tests/test_precision.py checks that
an emulated step is much closer to a real bf16 autocast step than an fp32 step is.
"""
from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

aten = torch.ops.aten
#: ops whose floating inputs are rounded first (autocast's lower-precision matrix ops)
MATMUL_OPS = {aten.convolution.default, aten.convolution_backward.default, aten.mm.default, aten.addmm.default,
              aten.bmm.default, aten.baddbmm.default, aten.addbmm.default}
#: ops of which only the first output is rounded (batch norm keeps its statistics and parameter
#: gradients in fp32)
FIRST_OUTPUT_ONLY = {aten.native_batch_norm.default, aten.native_batch_norm_backward.default,
                     aten._native_batch_norm_legit.default, aten._native_batch_norm_legit_functional.default,
                     aten._native_batch_norm_legit_no_training.default}


def round_bf16(t):
    """``t`` rounded to the nearest bf16 value (round-to-nearest-even), kept in fp32."""
    if isinstance(t, torch.Tensor) and t.dtype == torch.float32:
        return t.to(torch.bfloat16).to(torch.float32)
    return t


class BF16Emulation(TorchDispatchMode):
    """Dispatch mode: round matrix-op operands and every op's fp32 result to bf16 precision."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in MATMUL_OPS:
            args, kwargs = tree_map(round_bf16, args), tree_map(round_bf16, kwargs)
        out = func(*args, **kwargs)
        returns = func._schema.returns
        if isinstance(out, (tuple, list)):
            keep = 1 if func in FIRST_OUTPUT_ONLY else len(out)
            return type(out)(self._round(o, returns[i] if i < len(returns) else None) if i < keep else o
                             for i, o in enumerate(out))
        return self._round(out, returns[0] if returns else None)

    @staticmethod
    def _round(t, ret):
        if not isinstance(t, torch.Tensor) or t.dtype != torch.float32:
            return t
        alias = ret.alias_info if ret is not None else None
        if alias is None:           # a new tensor: return its rounded value
            return round_bf16(t)
        if alias.is_write:          # in place (relu_, add_): round where it lives
            t.copy_(t.to(torch.bfloat16))
        return t                    # a view: its values were rounded where they were made
