"""`torch.jit.script` without torch's stale builtin ids.

TorchScript decides whether a Python object met while compiling is a builtin operator by its
``id()``: `torch.jit._builtins` keeps a table from ids to operator names. When torch replaces an
operator object, that table keeps the old object's id. Two ways this happens:

- `torch.library.Library.define` adds an overload to an operator that already has a packet.
  `torch._ops._refresh_packet` then swaps in a new op object, and the old one is freed. Importing
  FX quantization does this four times: `torch.ao.quantization.fx._decomposed` defines
  ``quantize_per_tensor`` and ``dequantize_per_tensor`` overload by overload.
- A library is destroyed and its packets are dropped.

CPython hands a freed object's address, and so its id, to the next object of that size. If
`torch.jit.script` then meets that object (a constant, an attribute, a global), the object is
taken for the operator and compiling fails with "builtin cannot be used as a value". That is
the intermittent failure of ``ml export --int8``'s scripting seen in CI (1 run in 2, at
`Conv2d._conv_forward`).

`forget_replaced_ops` drops those stale ids: in the namespaces that torch.library defines, an id
is current only if it is the id of the op that the namespace's packet holds now. ``aten`` and
``prim`` are left alone: there, Python functions such as `torch.add` share an operator's name
with the op by design. `script` calls it, then compiles.
"""

from __future__ import annotations

from typing import Any

import torch

# Namespaces whose names several live objects share on purpose (register_all's ``torch.*``
# functions, torch.jit's own ``_register_builtin`` calls): never pruned.
SHARED_NAMESPACES = frozenset({"aten", "prim"})


def _current_op_ids() -> dict[str, int]:
    """Operator name -> the id of the op its cached packet holds now, over torch.ops's namespaces."""
    current: dict[str, int] = {}
    for ns_name in list(getattr(torch.ops, "_dir", [])):
        namespace = getattr(torch.ops, ns_name, None)
        for op_name in list(getattr(namespace, "_dir", [])):
            packet = getattr(namespace, op_name, None)
            op = getattr(packet, "_op", None)
            name = getattr(packet, "_qualified_op_name", None)
            if op is not None and name:
                current[name] = id(op)
    return current


def forget_replaced_ops() -> int:
    """Remove from torch.jit's builtin table the ids of ops that torch has replaced or dropped.

    Returns how many were removed. A torch without this table (its internals changed) is left
    as it is."""
    builtins = getattr(torch.jit, "_builtins", None)
    get_table = getattr(builtins, "_get_builtin_table", None)
    if get_table is None:
        return 0
    table: dict[int, str] = get_table()
    current = _current_op_ids()
    stale = [
        key
        for key, name in table.items()
        if name.split("::", 1)[0] not in SHARED_NAMESPACES and current.get(name) != key
    ]
    for key in stale:
        del table[key]
    return len(stale)


def script(obj: Any) -> Any:
    """`torch.jit.script(obj)`, after `forget_replaced_ops`."""
    forget_replaced_ops()
    return torch.jit.script(obj)
