"""A trainable LoRA on a frozen module, present only while it is in use.

peft builds the LoRA layers (its `lora.Linear` wraps each targeted linear) and matches the target names.
The layers are kept outside the host module: `attached()` swaps them in for the duration of a `with`
block and restores the original linears afterwards, so a module shared with other users (a ComfyUI
MODEL, a diffusers pipeline) is never left changed. The weights export in ComfyUI's LoRA key format.

The layers compute in the model's own dtype (bf16 on GPU): fp32 LoRA weights would make peft cast every
LoRA input to fp32 and keep that copy for the backward pass, as much memory again as the activations
themselves. The optimizer steps fp32 master copies instead; `collect_gradients` and `publish_weights`
move gradients and weights between the two around each step.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

ADAPTER = "tto"


@dataclass(frozen=True)
class LoRASpec:
    rank: int = 16
    alpha: float = 16.0
    target_modules: str | tuple[str, ...] = ()  # regex (full match) or exact name suffixes, as in peft
    seed: int = 0

    def __post_init__(self):
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {self.rank}.")
        if not self.target_modules:
            raise ValueError("LoRA target_modules is empty: name the linears to adapt (a regex or names).")


class LoRAAdapter:
    """LoRA layers for the linears of `module` that match `spec.target_modules`; zero effect at start."""

    def __init__(self, module: nn.Module, spec: LoRASpec, compute_dtype: torch.dtype = torch.float32,
                 export_name: Callable[[str], str] = lambda name: name):
        from peft import LoraConfig
        from peft.tuners.lora import layer as lora_layer
        from peft.tuners.tuners_utils import check_target_module_exists

        target = spec.target_modules if isinstance(spec.target_modules, str) else list(spec.target_modules)
        self.config = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, target_modules=target, lora_dropout=0.0,
                                 init_lora_weights=True)
        self.spec = spec
        self.module = module
        self.export_name = export_name  # module name -> the original checkpoint's name, for ComfyUI keys
        self._slots: list[tuple[nn.Module, str, nn.Module, nn.Module]] = []  # parent, child name, base, wrapper
        self.names: list[str] = []
        flags = {id(p): p.requires_grad for p in module.parameters()}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            for name, child in list(module.named_modules()):
                if not name or not isinstance(child, nn.Linear) or not check_target_module_exists(self.config, name):
                    continue
                parent_name, _, child_name = name.rpartition(".")
                parent = module.get_submodule(parent_name) if parent_name else module
                wrapper = lora_layer.Linear(child, ADAPTER, config=self.config, r=spec.rank, lora_alpha=spec.alpha,
                                            lora_dropout=0.0, init_lora_weights=True)
                for sub in (wrapper.lora_A[ADAPTER], wrapper.lora_B[ADAPTER]):
                    sub.to(device=child.weight.device, dtype=torch.float32)
                self._slots.append((parent, child_name, child, wrapper))
                self.names.append(name)
        for p in module.parameters():  # peft may flip these while wrapping; the host's flags stay as they were
            if p.requires_grad != flags[id(p)]:
                p.requires_grad_(flags[id(p)])
        if not self._slots:
            raise ValueError(f"No linear layer matches the LoRA targets {spec.target_modules!r}; "
                             "is this the right kind of model?")
        if len(self._layer_parameters()) != 2 * len(self._slots):
            raise ValueError("Each LoRA layer must hold exactly a down and an up weight (no LoRA bias).")
        self._attached = False
        self.compute_dtype = compute_dtype
        self._masters: list[nn.Parameter] = []  # fp32 copies the optimizer steps, when the layers compute lower
        if compute_dtype != torch.float32:
            for p in self._layer_parameters():
                self._masters.append(nn.Parameter(p.detach().clone()))
                p.data = p.data.to(compute_dtype)

    @classmethod
    def for_reasoner(cls, reasoner, rank: int = 16, alpha: float = 16.0, seed: int = 0,
                     compute_dtype: torch.dtype = torch.float32) -> "LoRAAdapter":
        """A LoRA on the reasoner's attention and FFN linears, exporting under the checkpoint's own names."""
        spec = LoRASpec(rank=rank, alpha=alpha, target_modules=reasoner.lora_targets, seed=seed)
        return cls(reasoner.module, spec, compute_dtype, export_name=reasoner.lora_export_name)

    # ---------------------------------------------------------------------------------------------
    def _layer_parameters(self) -> list[nn.Parameter]:
        return [p for _, _, _, w in self._slots for p in (*w.lora_A[ADAPTER].parameters(),
                                                         *w.lora_B[ADAPTER].parameters())]

    def parameters(self) -> list[nn.Parameter]:
        """What the optimizer steps: fp32 masters, or the layers' own weights when they compute in fp32."""
        return self._masters or self._layer_parameters()

    def collect_gradients(self) -> None:
        """After backward: move the layers' gradients onto the fp32 masters (no-op without masters)."""
        for master, p in zip(self._masters, self._layer_parameters()):
            if p.grad is not None:
                master.grad = p.grad.float()
                p.grad = None

    @torch.no_grad()
    def publish_weights(self) -> None:
        """After a step: the layers compute with the masters' new values (no-op without masters)."""
        for master, p in zip(self._masters, self._layer_parameters()):
            p.copy_(master)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @contextlib.contextmanager
    def attached(self) -> Iterator[None]:
        """Swap the LoRA layers in; host parameters are frozen meanwhile. Everything is restored on exit."""
        if self._attached:
            yield
            return
        flags = [(p, p.requires_grad) for p in self.module.parameters() if p.requires_grad]
        try:
            for p, _ in flags:
                p.requires_grad_(False)
            for parent, child_name, _, wrapper in self._slots:
                setattr(parent, child_name, wrapper)
            self._attached = True
            yield
        finally:
            for parent, child_name, base, _ in self._slots:
                setattr(parent, child_name, base)
            for p, flag in flags:
                p.requires_grad_(flag)
            self._attached = False

    # ---------------------------------------------------------------------------------------------
    def _named_weights(self):
        """(module name, down, up) per LoRA layer, in the precision the optimizer keeps."""
        weights = self.parameters()
        for i, name in enumerate(self.names):
            yield name, weights[2 * i], weights[2 * i + 1]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """{name}.lora_A / .lora_B weights, cloned (a snapshot that later training does not change)."""
        out = {}
        for name, down, up in self._named_weights():
            out[f"{name}.lora_A"] = down.detach().clone()
            out[f"{name}.lora_B"] = up.detach().clone()
        return out

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, down, up in self._named_weights():
            down.copy_(state[f"{name}.lora_A"])
            up.copy_(state[f"{name}.lora_B"])
        self.publish_weights()

    def to_comfy(self, prefix: str = "diffusion_model.", dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """ComfyUI LoRA keys: `<prefix><original module name>.lora_down.weight`, `.lora_up.weight`, `.alpha`."""
        out = {}
        for name, down, up in self._named_weights():
            key = prefix + self.export_name(name)
            out[f"{key}.lora_down.weight"] = down.detach().to("cpu", dtype).contiguous()
            out[f"{key}.lora_up.weight"] = up.detach().to("cpu", dtype).contiguous()
            out[f"{key}.alpha"] = torch.tensor(float(self.spec.alpha))
        return out


def save_comfy_lora(state: dict[str, torch.Tensor], path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    save_file(state, str(path), metadata=metadata or {})
