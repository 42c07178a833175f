"""LoRA scoping and gradients, the diffusers reasoner backend, and the sampling conventions."""

import pytest
import torch
from safetensors.torch import load_file

from tto_engine import LoRAAdapter, LoRASpec, draw_noise, predict_clean_latent, sample, save_comfy_lora
from tto_engine.diffusers_wan import DiffusersWanReasoner, diffusers_to_original_name
from tto_models.wan import TINY_DIFFUSERS_TEXT_DIM, build_tiny_diffusers_wan


@pytest.fixture()
def reasoner():
    model = build_tiny_diffusers_wan(seed=0)
    embeds = torch.randn(1, 8, TINY_DIFFUSERS_TEXT_DIM, generator=torch.Generator().manual_seed(1))
    return DiffusersWanReasoner(model, embeds)


@pytest.fixture()
def i2v():
    noise = draw_noise((1, 48, 3, 4, 4), seed=7)
    clean = torch.zeros_like(noise)
    clean[:, :, 0] = torch.randn(1, 48, 4, 4, generator=torch.Generator().manual_seed(3))
    mask = torch.ones(1, 1, 3, 1, 1)
    mask[:, :, 0] = 0
    return noise, clean, mask


def spec_for(reasoner, **kw):
    return LoRASpec(rank=kw.get("rank", 4), alpha=kw.get("alpha", 4.0), target_modules=reasoner.lora_targets,
                    seed=kw.get("seed", 0))


def test_lora_targets_attention_and_ffn_of_every_block(reasoner):
    lora = LoRAAdapter(reasoner.module, spec_for(reasoner))
    layers = len(reasoner.module.blocks)
    assert len(lora.names) == layers * 10  # q,k,v,o of self- and cross-attention + 2 FFN linears
    assert {n.split(".", 2)[2] for n in lora.names} == {
        "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k", "attn2.to_v",
        "attn2.to_out.0", "ffn.net.0.proj", "ffn.net.2"}


def test_lora_has_zero_effect_at_start_and_leaves_the_module_untouched(reasoner, i2v):
    module = reasoner.module
    noise, clean, mask = i2v
    weights = {k: v.clone() for k, v in module.state_dict().items()}
    structure = [(n, type(m)) for n, m in module.named_modules()]
    flags = {n: p.requires_grad for n, p in module.named_parameters()}
    with torch.no_grad():
        reference = sample(reasoner, noise, clean, mask, steps=4)

    lora = LoRAAdapter(module, spec_for(reasoner))
    with torch.no_grad(), lora.attached():
        assert any("lora" in type(m).__module__ for m in module.modules())
        assert torch.equal(sample(reasoner, noise, clean, mask, steps=4), reference)

    assert [(n, type(m)) for n, m in module.named_modules()] == structure
    assert {n: p.requires_grad for n, p in module.named_parameters()} == flags
    assert all(torch.equal(weights[k], v) for k, v in module.state_dict().items())
    with torch.no_grad():
        assert torch.equal(sample(reasoner, noise, clean, mask, steps=4), reference)


def test_gradients_reach_exactly_the_lora_parameters(reasoner, i2v):
    noise, clean, mask = i2v
    base = list(reasoner.module.parameters())
    lora = LoRAAdapter(reasoner.module, spec_for(reasoner))
    with lora.attached():
        z0 = predict_clean_latent(reasoner, noise, clean, mask, reasoner.sigmas(4), "first")
        z0[:, :, 1:].square().mean().backward()
    assert all(p.grad is None for p in base)
    assert all(p.grad is not None for p in lora.parameters())
    ups = [p for p in lora.parameters() if p.shape[1] == lora.spec.rank]  # lora_B: [out, rank]
    assert any(float(p.grad.abs().sum()) > 0 for p in ups)  # lora_B (up) receives signal at init


@pytest.mark.parametrize("mode", ["first", "last", "all"])
def test_gradient_modes_keep_the_frozen_frame_and_differ(reasoner, i2v, mode):
    noise, clean, mask = i2v
    lora = LoRAAdapter(reasoner.module, spec_for(reasoner))
    with lora.attached():
        z0 = predict_clean_latent(reasoner, noise, clean, mask, reasoner.sigmas(4), mode)
        assert torch.equal(z0[:, :, 0], clean[:, :, 0])
        assert z0.requires_grad
        z0.square().mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora.parameters())


def test_first_step_estimate_is_eps_minus_velocity(reasoner):
    noise = draw_noise((1, 48, 2, 4, 4), seed=1)
    with torch.no_grad():
        z0 = predict_clean_latent(reasoner, noise, torch.zeros_like(noise), None, reasoner.sigmas(4), "first")
        v = reasoner.module(hidden_states=noise, timestep=torch.tensor([1000.0]),
                            encoder_hidden_states=reasoner.prompt_embeds, return_dict=False)[0]
    assert torch.allclose(z0, noise - v, atol=1e-6)


def test_per_token_timesteps_put_zero_on_frozen_frames(reasoner, i2v):
    noise, _, mask = i2v
    ts = reasoner._timestep(noise, 1.0, mask)
    tokens_per_frame = (4 // 2) * (4 // 2)
    assert ts.shape == (1, 3 * tokens_per_frame)
    assert torch.all(ts[0, :tokens_per_frame] == 0) and torch.all(ts[0, tokens_per_frame:] == 1000)


def test_export_in_comfy_lora_format(reasoner, tmp_path):
    lora = LoRAAdapter.for_reasoner(reasoner, rank=4, alpha=8.0)  # diffusers module, original Wan names out
    with torch.no_grad():
        for p in lora.parameters():
            p.add_(0.01)
    state = lora.to_comfy()
    path = tmp_path / "lora.safetensors"
    save_comfy_lora(state, path)
    loaded = load_file(str(path))
    assert set(loaded) == set(state)
    down = loaded["diffusion_model.blocks.0.self_attn.q.lora_down.weight"]
    up = loaded["diffusion_model.blocks.1.ffn.2.lora_up.weight"]
    assert down.shape[0] == 4 and up.shape[1] == 4
    assert float(loaded["diffusion_model.blocks.0.cross_attn.o.alpha"]) == 8.0
    assert all(k.startswith("diffusion_model.blocks.") for k in loaded)


def test_diffusers_names_map_to_original_wan_names():
    assert diffusers_to_original_name("blocks.3.attn1.to_q") == "blocks.3.self_attn.q"
    assert diffusers_to_original_name("blocks.0.attn2.to_out.0") == "blocks.0.cross_attn.o"
    assert diffusers_to_original_name("blocks.1.ffn.net.0.proj") == "blocks.1.ffn.0"
    assert diffusers_to_original_name("blocks.1.ffn.net.2") == "blocks.1.ffn.2"


def test_lora_errors_are_actionable(reasoner):
    with pytest.raises(ValueError, match="No linear layer matches"):
        LoRAAdapter(reasoner.module, LoRASpec(target_modules=r"nothing\.here"))
    with pytest.raises(ValueError, match="rank"):
        LoRASpec(rank=0, target_modules="x")


def test_lora_init_is_deterministic(reasoner):
    a = LoRAAdapter(reasoner.module, spec_for(reasoner, seed=5)).state_dict()
    b = LoRAAdapter(reasoner.module, spec_for(reasoner, seed=5)).state_dict()
    c = LoRAAdapter(reasoner.module, spec_for(reasoner, seed=6)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
