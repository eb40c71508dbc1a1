"""Two scoped fixes to coremltools 9.0's TorchScript frontend, so every zoo model converts on this stack.

coremltools offers `register_torch_op(..., override=True)` for replacing an op converter; we use it for:

- `aten::Int` on a length-1 tensor. Tracing turns `int(h * w)` on shapes into `aten::Int` of a (1,)-shaped
  constant; coremltools calls `int(array([n]))`, which NumPy >= 2.4 refuses ("only 0-dimensional arrays can be
  converted to Python scalars", apple/coremltools#2633, fixed after 9.0). Every attention model hits it.
- `clamp_min` / `clamp_max` with a Python-number bound of another dtype (`x.clamp_min(0)` on a float tensor):
  coremltools asserts both dtypes are equal. We cast a constant bound to the tensor's dtype.

Anything else is handed to coremltools' own converter unchanged. `install()` is idempotent.
"""
from __future__ import annotations

import numpy as np

_installed = False


def install() -> None:
    """Register the fixed converters with coremltools (once per process)."""
    global _installed
    if _installed:
        return
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch import ops as torch_ops
    from coremltools.converters.mil.frontend.torch.torch_op_registry import register_torch_op
    from coremltools.converters.mil.mil.types.type_mapping import nptype_from_builtin

    original_int = torch_ops._int
    original_clamp = {"clamp_min": torch_ops.clamp_min, "clamp_max": torch_ops.clamp_max}

    def int_of_length_one(context, node) -> None:
        x = context[node.inputs[0]]
        if x.can_be_folded_to_const() and np.ndim(x.val) > 0 and np.size(x.val) == 1:
            context.add(mb.const(val=np.int32(np.asarray(x.val).reshape(())), name=node.name), node.name)
            return
        original_int(context, node)

    def clamp_with_cast_bound(op_name: str):
        mil_op = mb.maximum if op_name == "clamp_min" else mb.minimum

        def convert(context, node) -> None:
            x, bound = context[node.inputs[0]], context[node.inputs[1]]
            if x.dtype == bound.dtype or bound.val is None:
                original_clamp[op_name](context, node)
                return
            cast_bound = mb.const(val=np.asarray(bound.val).astype(nptype_from_builtin(x.dtype)))
            context.add(mil_op(x=x, y=cast_bound, name=node.name))

        convert.__name__ = op_name  # the registry keys converters by function name
        return convert

    int_of_length_one.__name__ = "int"
    register_torch_op(int_of_length_one, override=True)
    for name in original_clamp:
        register_torch_op(clamp_with_cast_bound(name), override=True)
    _installed = True
