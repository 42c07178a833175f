"""Memory savings that must not change results: block checkpointing, the decoder recomputed in its
backward pass, and LoRA layers computing in the model's dtype with fp32 master weights."""

import pytest
import torch

from tto_engine import (LinearRGBDecoder, LoRAAdapter, ModuleDecoder, Query, TTOConfig, decode_for_grading, draw_noise,
                        predict_clean_latent, run_tto)
from tto_engine.diffusers_wan import DiffusersWanReasoner
from tto_engine.memory import CheckpointedBlock, checkpointed_blocks
from tto_models.wan import TINY_DIFFUSERS_TEXT_DIM, build_tiny_diffusers_wan

QUERIES = [Query("Does the yellow ball reach the red square?", "goal"),
           Query("Does the ball avoid every X?", "process")]


def reasoner(dtype=torch.float32):
    model = build_tiny_diffusers_wan(seed=0).to(dtype)
    embeds = torch.randn(1, 8, TINY_DIFFUSERS_TEXT_DIM, generator=torch.Generator().manual_seed(1))
    return DiffusersWanReasoner(model, embeds)


def decoder():
    return LinearRGBDecoder(torch.randn(48, 3, generator=torch.Generator().manual_seed(2)) * 0.2)


def test_block_checkpointing_gives_the_same_gradients_and_restores_the_blocks(teacher):
    r = reasoner()
    blocks_before = list(r.blocks)
    assert len(blocks_before) == 2  # so that half of them is one block
    noise = draw_noise((1, 48, 3, 4, 4), seed=0)
    results = {}
    for checkpointing in (False, 0.5, True):
        lora = LoRAAdapter.for_reasoner(r, rank=4, alpha=4.0)
        config = TTOConfig(max_iterations=4, learning_rate=2e-2, frames=8, loss_threshold=0.0,
                           checkpoint_reasoner=checkpointing)
        results[checkpointing] = run_tto(r, decoder(), teacher, QUERIES, lora, noise, torch.zeros_like(noise),
                                         config=config)
    plain = results[False]
    for checkpointed in (results[0.5], results[True]):
        assert [h.loss for h in plain.history] == [h.loss for h in checkpointed.history] or all(
            abs(a.loss - b.loss) < 1e-5 for a, b in zip(plain.history, checkpointed.history))
        a, b = plain.lora.state_dict(), checkpointed.lora.state_dict()
        assert all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-7) for k in a)
    assert any(float(a[k].abs().sum()) > 0 for k in a if k.endswith("lora_B"))  # the LoRA did move
    assert list(r.blocks) == blocks_before


def test_a_share_of_the_blocks_is_checkpointed_spread_evenly():
    blocks = torch.nn.ModuleList(torch.nn.Linear(2, 2) for _ in range(30))
    with checkpointed_blocks(blocks, 1 / 3):
        wrapped = [i for i, b in enumerate(blocks) if isinstance(b, CheckpointedBlock)]
    assert wrapped == list(range(2, 30, 3))
    assert not any(isinstance(b, CheckpointedBlock) for b in blocks)
    for share, count in ((0, 0), (False, 0), (0.25, 7), (0.5, 15), (True, 30), (1.0, 30)):
        with checkpointed_blocks(blocks, share):
            assert sum(isinstance(b, CheckpointedBlock) for b in blocks) == count
    with pytest.raises(ValueError, match="share"):
        with checkpointed_blocks(blocks, 1.5):
            pass
    with pytest.raises(ValueError, match="checkpoint_reasoner"):
        TTOConfig(checkpoint_reasoner=-0.1)


class ConvDecoder(torch.nn.Module):
    """A small video decoder with activations worth keeping: latent [1, 48, T, H, W] -> frames [T, 3, 8H, 8W]."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.inner = torch.nn.Conv3d(48, 16, 1)
        self.out = torch.nn.Conv2d(16, 3, 3, padding=1)

    def forward(self, z):
        x = torch.nn.functional.interpolate(torch.relu(self.inner(z))[0].movedim(1, 0), scale_factor=8)
        return torch.sigmoid(self.out(x))


def saved_bytes(fn) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of what `fn` computes."""
    kept = [0]

    def pack(t):
        kept[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return kept[0]


def test_a_recomputed_decoder_keeps_only_the_latent_and_gives_the_same_gradients(teacher):
    decoder = ModuleDecoder(ConvDecoder(), temporal_stride=4)
    latent = torch.randn(1, 48, 3, 4, 4, requires_grad=True)
    kept = saved_bytes(lambda: decode_for_grading(decoder, latent, 2))
    recomputed = saved_bytes(lambda: decode_for_grading(decoder, latent, 2, recompute=True))
    assert recomputed == latent.numel() * 4 < kept

    r = reasoner()
    noise = draw_noise((1, 48, 3, 4, 4), seed=0)
    results = {}
    for recompute in (False, True):
        lora = LoRAAdapter.for_reasoner(r, rank=4, alpha=4.0)
        config = TTOConfig(max_iterations=3, learning_rate=2e-2, frames=2, loss_threshold=0.0,
                           recompute_decoder=recompute)
        results[recompute] = run_tto(r, decoder, teacher, QUERIES, lora, noise, torch.zeros_like(noise),
                                     config=config)
    assert [h.loss for h in results[False].history] == [h.loss for h in results[True].history]
    a, b = results[False].lora.state_dict(), results[True].lora.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(float(a[k].abs().sum()) > 0 for k in a if k.endswith("lora_B"))  # the LoRA did move


def fp32_activation_bytes(r, lora, noise) -> tuple[int, int]:
    """Bytes of fp32 activations (not weights) autograd keeps for one prediction's backward pass, and the bytes
    the LoRA layers' inputs would take in fp32."""
    weights = {p.data_ptr() for p in [*r.module.parameters(), *lora._layer_parameters()]}
    kept, inputs = [0], [0]

    def pack(t):
        if t.dtype == torch.float32 and t.data_ptr() not in weights:
            kept[0] += t.numel() * 4
        return t

    hooks = [w.register_forward_pre_hook(lambda m, args: inputs.__setitem__(0, inputs[0] + args[0].numel() * 4))
             for *_, w in lora._slots]
    try:
        with lora.attached(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            predict_clean_latent(r, noise, torch.zeros_like(noise), None, r.sigmas(4), "first")
    finally:
        for h in hooks:
            h.remove()
    return kept[0], inputs[0]


def test_lora_layers_compute_in_the_model_dtype_and_keep_no_fp32_copies():
    r = reasoner(torch.bfloat16)
    noise = draw_noise((1, 48, 3, 4, 4), seed=0)
    in_fp32, lora_inputs = fp32_activation_bytes(r, LoRAAdapter.for_reasoner(r, rank=4, alpha=4.0), noise)
    in_bf16, _ = fp32_activation_bytes(r, LoRAAdapter.for_reasoner(r, rank=4, alpha=4.0,
                                                                    compute_dtype=torch.bfloat16), noise)
    # fp32 layers make peft keep an fp32 copy of every LoRA input; layers in the model's dtype keep none
    assert in_fp32 - in_bf16 >= lora_inputs > 0


def test_fp32_masters_take_the_step_and_the_layers_follow(teacher):
    r = reasoner(torch.bfloat16)
    lora = LoRAAdapter.for_reasoner(r, rank=4, alpha=4.0, compute_dtype=torch.bfloat16)
    assert all(p.dtype == torch.float32 for p in lora.parameters())
    noise = draw_noise((1, 48, 3, 4, 4), seed=0)
    result = run_tto(r, decoder(), teacher, QUERIES, lora, noise, torch.zeros_like(noise),
                     config=TTOConfig(max_iterations=3, learning_rate=2e-2, frames=8, loss_threshold=0.0))
    assert sum(h.updated for h in result.history) == 2
    masters, layers = lora.parameters(), lora._layer_parameters()
    assert all(layer.dtype == torch.bfloat16 for layer in layers)
    assert all(torch.equal(layer, master.to(torch.bfloat16)) for layer, master in zip(layers, masters))
    ups = [m for name, _, m in lora._named_weights()]
    assert any(float(u.abs().sum()) > 0 for u in ups)  # the fp32 masters moved
    exported = lora.to_comfy()
    assert all(t.dtype == torch.float32 for t in exported.values())
