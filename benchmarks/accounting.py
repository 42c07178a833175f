"""Memory and FLOP accounting for one run of real code, on fake tensors or on real ones.

`Ledger` is a TorchDispatchMode that sees every tensor an operator returns. It keeps the bytes of each
distinct storage while the storage lives (a weak reference tells when it is freed), and the high-water
mark of their sum, split by *role* (which part of the loop made the tensor: "weights:reasoner",
"reasoner", "teacher", "lora", ...) and by whether autograd saved the tensor for the backward.

Roles: code between `ledger.role("x")` enters and exits is "x". In a backward pass no code is ours, so
an operator takes the role of the saved tensor its autograd node unpacked last (the node's own forward
role), or "other" before anything is unpacked (the loop's glue between roles: frame selection, the loss
sum); a role entered inside a backward pass (a checkpointed role recomputing its forward there) holds
for the rest of that pass. Anything else inherits the role of its inputs (an optimizer step on LoRA
tensors is "lora"). Tensors that an activation checkpoint keeps or recomputes pass through its own
hooks, not the ledger's: they count as live, not saved.

On fake tensors (`fake_mode()`), weights and activations carry shapes and dtypes but no data, so the
loop can run at any size on a small machine. Index bookkeeping (token ids, masks built from Python
lists) stays real; the ledger resolves the few operators where a real boolean mask would make a fake
result's shape data-dependent, and answers `.item()` on a fake tensor with a stand-in value.
"""

from __future__ import annotations

import contextlib
import weakref
from collections import defaultdict

import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.utils import flop_counter
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

aten = torch.ops.aten
GIB = 1024 ** 3

_MASK_INDEXING = {aten.index.Tensor, aten.index_put_.default, aten.index_put.default,
                  aten._index_put_impl_.default}


def fake_mode() -> FakeTensorMode:
    """Fake tensors that may meet real ones (real inputs are converted as they are used).

    The mode normally remembers every fake result through a weak reference; `nn.Module.to()` swaps
    fake parameters in place, which a weakly referenced tensor refuses. Results are fresh tensors that
    are never looked up again, so they are not remembered."""
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    mode.fake_tensor_converter.set_tensor_memo = lambda tensor, fake: None
    return mode


def is_fake(t) -> bool:
    return isinstance(t, FakeTensor)


def _storage_key(t: torch.Tensor):
    st = t.untyped_storage()
    return st._cdata, st


def _real_mask_to_indices(indices):
    """A real boolean mask index -> the long index tensors it selects (so a fake result's shape is known)."""
    out, changed = [], False
    for idx in indices:
        if isinstance(idx, torch.Tensor) and not is_fake(idx) and idx.dtype in (torch.bool, torch.uint8):
            out.extend(idx.bool().nonzero(as_tuple=True))
            changed = True
        else:
            out.append(idx)
    return out, changed


class Ledger(TorchDispatchMode):
    """Bytes of live tensor storages by role, their peak, and what was live at the peak."""

    def __init__(self, stand_in: float = 1.0, flop_registry: dict | None = None):
        super().__init__()
        self.stand_in = stand_in          # what `.item()` of a fake floating tensor returns
        self.flop_registry = flop_registry or {}  # FlopCounterMode's formulas, to split FLOPs by role
        self.flops: dict[str, int] = defaultdict(int)
        self._hook_stack: list = []
        self._explicit: list[str] = []    # roles entered with `role()`
        self._unpacked_role: str | None = None
        self._task = -1                   # the autograd graph task (one per backward() call) seen last
        self._entries: dict[int, list] = {}   # storage key -> [nbytes, role, saved]
        self.live: dict[tuple[str, bool], int] = defaultdict(int)  # (role, saved) -> bytes
        self.current = 0
        self.peak = 0
        self.peak_live: dict[tuple[str, bool], int] = {}
        self.peak_label = ""              # role and pass at the peak, e.g. "teacher backward"
        self.phase_peaks: dict[str, int] = {}  # the most live at once while each role and pass allocated
        self.saved_peaks: dict[str, int] = {}  # the most bytes each role had saved for the backward at once

    # --- roles --------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def role(self, name: str):
        self._explicit.append(name)
        try:
            yield
        finally:
            self._explicit.pop()

    def reset_peak(self):
        """Start a new high-water mark from what is live now (e.g. after a warm-up iteration)."""
        self.peak, self.peak_live, self.peak_label = self.current, dict(self.live), "start"
        self.phase_peaks = {}
        self.saved_peaks = {role: nbytes for (role, saved), nbytes in self.live.items() if saved}

    def role_of(self, t: torch.Tensor) -> str | None:
        entry = self._entries.get(t.untyped_storage()._cdata)
        return entry[1] if entry else None

    def _current_role(self, args) -> str:
        task = torch._C._current_graph_task_id()
        if task != self._task:  # a new backward() starts with no node of its own yet
            self._task, self._unpacked_role = task, None
        if self._explicit:
            if task != -1:  # a role recomputing its forward inside a backward pass: the rest of the pass is its
                self._unpacked_role = self._explicit[-1]
            return self._explicit[-1]
        if task != -1:  # before a backward() unpacks anything it runs the loop's glue (frame selection)
            return self._unpacked_role or "other"
        for t in tree_flatten(args)[0]:
            if isinstance(t, torch.Tensor):
                r = self.role_of(t)
                if r is not None:
                    return r.removeprefix("weights:")
        return "other"

    # --- storage bookkeeping -----------------------------------------------------------------------
    def track(self, t: torch.Tensor, role: str) -> None:
        key, st = _storage_key(t)
        if key in self._entries:
            return
        nbytes = st.nbytes()
        self._entries[key] = [nbytes, role, False]
        weakref.finalize(st, self._free, key)
        self.live[(role, False)] += nbytes
        self.current += nbytes
        label = f"{role} {'backward' if torch._C._current_graph_task_id() != -1 else 'forward'}"
        if self.current > self.phase_peaks.get(label, 0):
            self.phase_peaks[label] = self.current
        if self.current > self.peak:
            self.peak, self.peak_live, self.peak_label = self.current, dict(self.live), label

    def _free(self, key):
        entry = self._entries.pop(key, None)
        if entry is not None:
            nbytes, role, saved = entry
            self.live[(role, saved)] -= nbytes
            self.current -= nbytes

    def _mark_saved(self, t):
        entry = self._entries.get(t.untyped_storage()._cdata)
        if entry is not None and not entry[2] and not entry[1].startswith("weights:"):
            self.live[(entry[1], False)] -= entry[0]
            self.live[(entry[1], True)] += entry[0]
            if self.live[(entry[1], True)] > self.saved_peaks.get(entry[1], 0):
                self.saved_peaks[entry[1]] = self.live[(entry[1], True)]
            entry[2] = True
        return t

    def _note_unpacked(self, t):
        r = self.role_of(t)
        if r is not None:
            self._task = torch._C._current_graph_task_id()
            self._unpacked_role = r.removeprefix("weights:")
        return t

    # --- dispatch ----------------------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is aten._local_scalar_dense.default and is_fake(args[0]):
            return self._stand_in(args[0])
        if func in _MASK_INDEXING and is_fake(args[0]):
            indices, changed = _real_mask_to_indices(args[1])
            if changed:
                args = (args[0], indices, *args[2:])
        if func is not torch.ops.prim.device.default:
            # Under inference mode composite operators (linear, einsum) arrive whole; run their
            # decomposition so that the matmuls inside are seen, as FlopCounterMode does.
            with self:
                decomposed = func.decompose(*args, **kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        out = func(*args, **kwargs)
        role = self._current_role(args)
        formula = self.flop_registry.get(func.overloadpacket)
        if formula is not None:
            self.flops[role] += formula(*args, **kwargs, out_val=out)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.track(t, role)
        return out

    def _stand_in(self, t):
        if t.dtype == torch.bool:
            return True  # finiteness checks and the like pass
        if t.dtype.is_floating_point:
            return self.stand_in
        raise RuntimeError(f"An integer value of a fake tensor {tuple(t.shape)} was read; it has no data. "
                           "Keep that bookkeeping on real tensors.")

    def __enter__(self):  # re-entrant: a fake mode entered later needs the ledger on top of it again
        hooks = torch.autograd.graph.saved_tensors_hooks(self._mark_saved, self._note_unpacked)
        hooks.__enter__()
        self._hook_stack.append(hooks)
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self._hook_stack.pop().__exit__(*exc)

    # --- reports -----------------------------------------------------------------------------------
    def weights_bytes(self) -> int:
        return sum(b for (r, _), b in self.live.items() if r.startswith("weights:"))

    def breakdown(self, at_peak: bool = True) -> dict[str, float]:
        """GiB by role: "<role>/saved" for tensors autograd saved for the backward, "<role>/live" for the
        rest (gradients, temporaries, and the block inputs an activation checkpoint holds on to);
        weights and the LoRA state (LoRA weights, AdamW moments, the last-good snapshot) whole."""
        source = self.peak_live if at_peak else self.live
        out: dict[str, float] = {}
        for (role, saved), nbytes in sorted(source.items()):
            if nbytes:
                whole = role.startswith("weights:") or role == "lora"
                name = role if whole else f"{role}/{'saved' if saved else 'live'}"
                out[name] = out.get(name, 0.0) + nbytes / GIB
        return out


# ----------------------------------------------------------------------------------------------------
# FLOPs

def _cpu_flash_forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query, key, value)


def _cpu_flash_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)


def flop_formulas() -> dict:
    """FlopCounterMode's formulas (matmuls, convolutions, attention), plus the CPU flash-attention
    kernels SDPA picks on CPU, counted like the GPU's flash and efficient kernels.

    The ledger applies them itself: FlopCounterMode's module tracker keeps the activations an
    activation-checkpointed backward recomputes alive, which would distort the memory count."""
    return flop_counter_mode().flop_registry


def flop_counter_mode() -> flop_counter.FlopCounterMode:
    """torch's FlopCounterMode with the same CPU attention formulas (a cross-check of the ledger)."""
    return flop_counter.FlopCounterMode(display=False, custom_mapping={
        aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_forward,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_backward,
    })
