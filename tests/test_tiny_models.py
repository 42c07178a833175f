"""Tiny models: deterministic from a seed, loadable by transformers / diffusers / stock ComfyUI, finite.

The ComfyUI checks import the real host in process ($TTO_COMFYUI, or the one scripts/setup_env.sh builds).
"""

import hashlib
import json
import logging
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tto_models import demo as demo_models, qwen, tokenizer, vae, wan, weights

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def _folder_bytes(folder) -> dict:
    folder = pathlib.Path(folder)
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------------------
# Fixtures: every expensive build happens once per module
# ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny_models")


@pytest.fixture(scope="module")
def qwen3_dir(work):
    return qwen.build_tiny_qwen3vl(work / "qwen3", seed=0)


@pytest.fixture(scope="module")
def qwen25_dir(work):
    return qwen.build_tiny_qwen25vl(work / "qwen25", seed=0)


@pytest.fixture(scope="module")
def demo(work):
    """The demo layout (all ComfyUI-side files, the ~1.4 GB VAE included), written once."""
    lines = []
    paths = demo_models.write_demo_models(work / "models", seed=0, log=lines.append)
    assert all(line.startswith("wrote") for line in lines), lines
    return paths




# ----------------------------------------------------------------------------------------------------
# Tokenizer and Qwen-VL teachers
# ----------------------------------------------------------------------------------------------------

def test_tokenizer_yes_no_are_single_tokens_and_specials_are_qwen_like(qwen3_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(qwen3_dir, local_files_only=True)
    ids = {w: tok.encode(w, add_special_tokens=False) for w in ("Yes", "No", " Yes", " No")}
    assert all(len(v) == 1 for v in ids.values()), ids
    assert len({v[0] for v in ids.values()}) == 4
    assert tok.decode(ids[" Yes"]) == " Yes"
    specials = tok.convert_tokens_to_ids(list(tokenizer.QWEN_SPECIAL_TOKENS))
    assert specials == list(range(len(tok) - 7, len(tok)))  # appended after the learned vocabulary
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    for special in tokenizer.QWEN_SPECIAL_TOKENS:  # each stays one token inside running text
        assert tok.encode(f"a{special}b", add_special_tokens=False)[1] == tok.convert_tokens_to_ids(special)
    assert 1900 <= len(tok) <= 2100
    text = '{"goal": "By the end of the video, does the yellow ball reach the red square?", "process": []}'
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def test_tokenizer_is_deterministic():
    a = tokenizer.build_tiny_tokenizer().backend_tokenizer.to_str()
    b = tokenizer.build_tiny_tokenizer().backend_tokenizer.to_str()
    assert a == b


def test_qwen3vl_round_trip(qwen3_dir):
    from transformers import AutoProcessor, AutoTokenizer, Qwen3VLForConditionalGeneration, Qwen3VLProcessor

    model = Qwen3VLForConditionalGeneration.from_pretrained(qwen3_dir, local_files_only=True).eval()
    processor = AutoProcessor.from_pretrained(qwen3_dir, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(qwen3_dir, local_files_only=True)
    assert isinstance(processor, Qwen3VLProcessor)
    assert type(processor.video_processor).__name__ == "Qwen3VLVideoProcessor"

    cfg = model.config
    t, v = cfg.text_config, cfg.vision_config
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads, t.head_dim,
            t.intermediate_size) == (128, 2, 4, 2, 32, 256)
    assert (v.depth, v.hidden_size, v.num_heads, v.intermediate_size, v.patch_size, v.temporal_patch_size,
            v.spatial_merge_size, v.out_hidden_size, list(v.deepstack_visual_indexes)) == \
        (2, 64, 2, 128, 16, 2, 2, 128, [0])
    assert t.vocab_size == len(tok) == model.get_input_embeddings().weight.shape[0]
    for field, token in [("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
                         ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")]:
        assert getattr(cfg, field) == tok.convert_tokens_to_ids(token), field
    assert t.eos_token_id == tok.eos_token_id and t.pad_token_id == tok.pad_token_id

    vp = processor.video_processor
    assert (vp.patch_size, vp.temporal_patch_size, vp.merge_size) == (16, 2, 2)
    assert list(vp.image_mean) == [0.5] * 3 and list(vp.image_std) == [0.5] * 3
    assert processor.image_processor.patch_size == 16

    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Does it?"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Does it?<|im_end|>\n"
                    "<|im_start|>assistant\n")
    assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == text
    image_msg = [{"role": "system", "content": "Be brief."},
                 {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Red?"}]}]
    assert processor.apply_chat_template(image_msg, tokenize=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Red?<|im_end|>\n")

    frames = (np.random.RandomState(0).rand(8, 64, 64, 3) * 255).astype(np.uint8)
    inputs = processor(text=[text], videos=[frames], do_sample_frames=False, return_tensors="pt")
    assert inputs["video_grid_thw"].tolist() == [[4, 4, 4]]
    assert inputs["pixel_values_videos"].shape == (64, 3 * 2 * 16 * 16)
    n_pad = int((inputs["input_ids"] == cfg.video_token_id).sum())
    assert n_pad == 4 * 4 * 4 // 4
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], len(tok))
    assert torch.isfinite(logits).all()
    nll_yes = -logits[0, -1].log_softmax(-1)[tok.convert_tokens_to_ids("Yes")]
    assert 3.0 < float(nll_yes) < 12.0  # near-uniform over ~2000 tokens: log(2000) ~ 7.6

    image = (np.random.RandomState(1).rand(64, 96, 3) * 255).astype(np.uint8)
    text = processor.apply_chat_template(image_msg, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3


def test_qwen25vl_round_trip(qwen25_dir):
    from transformers import AutoProcessor, AutoTokenizer, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(qwen25_dir, local_files_only=True).eval()
    processor = AutoProcessor.from_pretrained(qwen25_dir, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(qwen25_dir, local_files_only=True)
    assert isinstance(processor, Qwen2_5_VLProcessor)
    cfg = model.config
    v = cfg.vision_config
    assert (v.patch_size, v.spatial_merge_size, v.temporal_patch_size, v.depth) == (14, 2, 2, 2)
    assert all(0 <= i < v.depth for i in v.fullatt_block_indexes)
    assert v.window_size % (v.patch_size * v.spatial_merge_size) == 0
    assert cfg.text_config.vocab_size == len(tok)
    assert cfg.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert cfg.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert all(len(tok.encode(w, add_special_tokens=False)) == 1 for w in ("Yes", "No", " Yes", " No"))
    assert list(processor.image_processor.image_mean) == pytest.approx([0.48145466, 0.4578275, 0.40821073])

    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Does it?"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    frames = (np.random.RandomState(0).rand(4, 112, 112, 3) * 255).astype(np.uint8)  # 4 windows per frame
    inputs = processor(text=[text], videos=[frames], return_tensors="pt")
    assert inputs["video_grid_thw"].tolist() == [[2, 8, 8]]
    with torch.no_grad():
        logits = model(**inputs).logits
    assert torch.isfinite(logits).all() and logits.shape[-1] == len(tok)


def test_qwen_builds_are_deterministic(qwen3_dir, work):
    again = qwen.build_tiny_qwen3vl(work / "qwen3_again", seed=0)
    assert _folder_bytes(again) == _folder_bytes(qwen3_dir)
    other = qwen.build_tiny_qwen3vl(work / "qwen3_seed1", seed=1)
    a, b = load_file(qwen3_dir / "model.safetensors"), load_file(other / "model.safetensors")
    assert a.keys() == b.keys()
    assert not torch.equal(a["lm_head.weight"], b["lm_head.weight"])
    assert (other / "tokenizer.json").read_bytes() == (qwen3_dir / "tokenizer.json").read_bytes()


def test_qwen3_build_sizes_the_vision_tower_and_language_model(work):
    import json

    folder = qwen.build_tiny_qwen3vl(work / "qwen3_wide", seed=0, vision_width=128, text_layers=3)
    config = json.loads((folder / "config.json").read_text())
    vision, text = config["vision_config"], config["text_config"]
    assert (vision["hidden_size"], vision["intermediate_size"], vision["num_heads"]) == (128, 256, 4)
    assert text["num_hidden_layers"] == 3
    layers = {k.split(".layers.")[1].split(".")[0] for k in load_file(folder / "model.safetensors")
              if k.startswith("model.language_model.layers.")}
    assert layers == {"0", "1", "2"}
    with pytest.raises(ValueError, match="multiple of 32"):
        qwen.build_tiny_qwen3vl(work / "qwen3_odd", seed=0, vision_width=80)


def test_builders_refuse_to_replace_unrelated_folders(work):
    folder = work / "not_a_checkpoint"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError):
        qwen.build_tiny_qwen3vl(folder)
    assert (folder / "notes.txt").read_text() == "keep me"


def test_qwen_weights_are_explicitly_filled(qwen3_dir, qwen25_dir):
    for folder in (qwen3_dir, qwen25_dir):
        sd = load_file(folder / "model.safetensors")
        for name, t in sd.items():
            assert torch.isfinite(t).all(), name
            if name.endswith("bias"):
                assert not t.any(), name
            elif t.ndim == 1:
                assert torch.all(t == 1), name
            else:
                assert 0.015 < float(t.float().std()) < 0.025, name


# ----------------------------------------------------------------------------------------------------
# Diffusers Wan (host-independent reasoner)
# ----------------------------------------------------------------------------------------------------

def test_diffusers_wan_forward_scalar_and_per_token_timesteps():
    model = wan.build_tiny_diffusers_wan(seed=0)
    cfg = model.config
    assert (cfg.in_channels, cfg.out_channels, tuple(cfg.patch_size)) == (48, 48, (1, 2, 2))
    assert cfg.text_dim == wan.TINY_DIFFUSERS_TEXT_DIM and cfg.image_dim is None
    assert not model.training and all(p.dtype == torch.float32 for p in model.parameters())
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 48, 3, 4, 4, generator=g)
    ctx = torch.randn(2, 8, wan.TINY_DIFFUSERS_TEXT_DIM, generator=g)
    with torch.no_grad():
        out = model(x, torch.tensor([999.0, 500.0]), ctx).sample
        seq_len = 3 * 2 * 2
        ts = torch.full((2, seq_len), 999.0)
        ts[:, :4] = 0.0  # first latent frame clean (Wan 2.2 TI2V)
        out_tok = model(x, ts, ctx).sample
        out_same = model(x, torch.full((2, seq_len), 999.0), ctx).sample
    assert out.shape == out_tok.shape == x.shape
    assert torch.isfinite(out).all() and torch.isfinite(out_tok).all()
    assert 0.01 < float(out.std()) < 10.0
    assert torch.allclose(out[0], out_same[0], atol=1e-5)  # per-token == scalar when all tokens agree
    assert not torch.allclose(out_tok, out_same)


def test_diffusers_wan_is_deterministic():
    a = wan.build_tiny_diffusers_wan(seed=0).state_dict()
    b = wan.build_tiny_diffusers_wan(seed=0).state_dict()
    c = wan.build_tiny_diffusers_wan(seed=1).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    small = wan.build_tiny_diffusers_wan(seed=0, num_layers=1)
    assert len(small.blocks) == 1


# ----------------------------------------------------------------------------------------------------
# ComfyUI-side files
# ----------------------------------------------------------------------------------------------------

def test_comfy_wan_is_detected_as_wan22_5b(comfy, demo, caplog):
    path = demo["diffusion_model"]
    with caplog.at_level(logging.INFO):
        patcher = comfy.sd.load_diffusion_model(str(path))
    assert not [r for r in caplog.records if "unet missing" in r.getMessage() or "unet unexpected" in r.getMessage()]
    model = patcher.model
    assert type(model) is comfy.model_base.WAN22
    assert isinstance(model.latent_format, comfy.latent_formats.Wan22)
    unet = model.model_config.unet_config
    assert (unet["in_dim"], unet["out_dim"], unet["dim"], unet["num_heads"], unet["num_layers"]) == (48, 48, 128, 1, 2)
    sd = load_file(path)
    module_sd = model.diffusion_model.state_dict()
    assert set(sd) == set(module_sd)
    assert all(torch.equal(sd[k].to(module_sd[k].dtype), module_sd[k]) for k in sd)  # no unfilled tensors
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 48, 3, 4, 4, generator=g)
    ctx = torch.randn(1, 8, 4096, generator=g)
    mask = torch.ones(1, 1, 3, 4, 4)
    mask[:, :, 0] = 0.0  # Wan22ImageToVideoLatent's noise_mask: frame 0 clean
    with torch.no_grad():
        out = model.apply_model(x, torch.tensor([0.9]), c_crossattn=ctx)
        out_masked = model.apply_model(x, torch.tensor([0.9]), c_crossattn=ctx, denoise_mask=mask)
        raw = model.diffusion_model(x, torch.tensor([900.0]), ctx)
    for t in (out, out_masked, raw):
        assert t.shape == x.shape and torch.isfinite(t).all()


def test_comfy_wan_is_deterministic(work, demo):
    same = wan.write_tiny_comfy_wan(work / "wan_again.safetensors", seed=0)
    other = wan.write_tiny_comfy_wan(work / "wan_seed1.safetensors", seed=1)
    assert same.read_bytes() == demo["diffusion_model"].read_bytes()
    assert weights.file_sha256(other) != weights.file_sha256(same)
    with pytest.raises(ValueError):
        wan.write_tiny_comfy_wan(work / "bad.safetensors", dim=96)
    wider = wan.write_tiny_comfy_wan(work / "wan_256.safetensors", seed=0, dim=256, layers=1, ffn_dim=512)
    assert load_file(wider)["head.modulation"].shape == (1, 2, 256)


def test_wan22_vae_encodes_and_decodes(comfy, demo):
    sd = comfy.utils.load_torch_file(str(demo["vae"]))
    assert all(t.dtype == torch.float16 for t in sd.values())
    assert "decoder.upsamples.0.upsamples.0.residual.2.weight" in sd
    n_params = sum(t.numel() for t in sd.values())
    assert 700e6 < n_params < 710e6
    vae = comfy.sd.VAE(sd=sd)
    assert isinstance(vae.first_stage_model, comfy.ldm.wan.vae2_2.WanVAE)
    assert set(sd) == set(vae.first_stage_model.state_dict())
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 64, 64, 3, generator=g)
    with torch.inference_mode():  # as ComfyUI runs nodes
        latent = vae.encode(image)
        frames = vae.decode(torch.randn(1, 48, 3, 4, 4, generator=g))
    assert latent.shape == (1, 48, 1, 4, 4) and torch.isfinite(latent).all()
    assert 0.01 < float(latent.std()) < 10.0
    assert frames.shape == (1, 9, 64, 64, 3) and torch.isfinite(frames).all()
    assert 0.02 < float(frames.std()) and float((frames == 0).float().mean() + (frames == 1).float().mean()) < 0.05


def test_wan22_vae_is_deterministic(work, demo):
    again = vae.write_tiny_wan22_vae(work / "vae_again.safetensors", seed=0)
    assert weights.file_sha256(again) == weights.file_sha256(demo["vae"])
    again.unlink()
    shapes = dict(vae.wan22_vae_shapes())
    with safe_open(str(demo["vae"]), "pt") as f:
        assert set(f.keys()) == set(shapes)
        assert all(tuple(f.get_slice(k).get_shape()) == shapes[k] for k in shapes)


def test_taehv_decodes_48_channel_latents(comfy, demo):
    sd = comfy.utils.load_torch_file(str(demo["taehv"]))
    assert sd["decoder.1.weight"].shape[1] == 48 and "decoder.22.bias" in sd
    vae = comfy.sd.VAE(sd=sd)
    assert isinstance(vae.first_stage_model, comfy.taesd.taehv.TAEHV)
    assert set(sd) == set(vae.first_stage_model.state_dict())  # encoder weights present too
    vae.first_stage_model.show_progress_bar = False
    g = torch.Generator().manual_seed(0)
    for scale in (1.0, 10.0):  # 10: the input tanh-clamp saturates, the worst case for the output range
        with torch.inference_mode():
            frames = vae.decode(scale * torch.randn(1, 48, 3, 4, 4, generator=g))
        assert frames.shape == (1, 9, 64, 64, 3)
        assert torch.isfinite(frames).all()
        assert float(frames.min()) >= 0.0 and float(frames.max()) <= 1.0
        assert float(frames.std()) > 0.01


def test_taehv_is_deterministic(work, demo):
    assert vae.write_tiny_taehv(work / "tae_again.safetensors", seed=0).read_bytes() == demo["taehv"].read_bytes()
    other = vae.write_tiny_taehv(work / "tae_seed1.safetensors", seed=1)
    assert weights.file_sha256(other) != weights.file_sha256(demo["taehv"])


def test_conditioning(work, demo):
    c = wan.tiny_conditioning(0, 16, 4096)
    assert c.shape == (1, 16, 4096) and c.dtype == torch.float32
    assert torch.equal(c, wan.tiny_conditioning(0, 16, 4096))
    assert not torch.equal(c, wan.tiny_conditioning(1, 16, 4096))
    stored = load_file(demo["conditioning"])
    assert list(stored) == [wan.CONDITIONING_KEY] and torch.equal(stored[wan.CONDITIONING_KEY], c)
    small = wan.write_tiny_conditioning(work / "cond.safetensors", seed=3, tokens=5, dim=64)
    assert torch.equal(load_file(small)[wan.CONDITIONING_KEY], wan.tiny_conditioning(3, 5, 64))


# ----------------------------------------------------------------------------------------------------
# Demo layout, manifest and the script
# ----------------------------------------------------------------------------------------------------

def test_demo_layout_and_manifest(demo):
    root = demo["manifest"].parent
    for item, rel in demo_models.DEMO_LAYOUT.items():
        assert demo[item] == root / rel and demo[item].exists()
    assert (demo["teacher"] / "config.json").is_file()
    manifest = json.loads(demo["manifest"].read_text())
    assert manifest["seed"] == 0 and manifest["version"] == weights.TINY_VERSION
    vae_digest = hashlib.sha256(demo["vae"].read_bytes()).hexdigest()
    assert manifest["items"]["vae"]["files"] == {"tiny_wan22_vae.safetensors": vae_digest}


def test_demo_models_are_kept_or_repaired(demo):
    root = demo["manifest"].parent
    stamps = {item: demo[item].stat().st_mtime_ns for item in demo_models.DEMO_LAYOUT}
    lines = []
    demo_models.write_demo_models(root, seed=0, log=lines.append)
    assert len(lines) == 5 and all(line.startswith("kept") for line in lines), lines
    assert {item: demo[item].stat().st_mtime_ns for item in demo_models.DEMO_LAYOUT} == stamps

    good = demo["conditioning"].read_bytes()
    demo["conditioning"].write_bytes(b"not a tensor")
    (demo["teacher"] / "config.json").unlink()
    lines = []
    demo_models.write_demo_models(root, seed=0, log=lines.append)
    status = {line.split()[1]: line.split()[0] for line in lines}
    assert status == {"diffusion_model": "kept", "vae": "kept", "taehv": "kept", "teacher": "wrote",
                      "conditioning": "wrote"}
    assert demo["conditioning"].read_bytes() == good
    assert (demo["teacher"] / "config.json").is_file()


def test_demo_models_command(demo):
    root = demo["manifest"].parent
    proc = subprocess.run([sys.executable, "-m", "tto_models.demo", "--models-dir", str(root), "--seed", "0"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert sum(line.startswith("kept") for line in out) == 5, proc.stdout
    assert any(line.startswith("manifest") for line in out)
