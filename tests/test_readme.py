"""The README's code examples, run as written (the diffusers one on the tiny models) or checked against the
files they name (the API one needs real models and a server)."""

import json
import re
import runpy

import torch
from safetensors.torch import load_file

from tto_models.wan import TINY_DIFFUSERS_TEXT_DIM, build_tiny_diffusers_wan
from tto_runner import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def code_block_after(heading: str) -> str:
    section = README[README.index(heading):]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_the_diffusers_example_runs_as_written(tiny_teacher_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    g = torch.Generator().manual_seed(0)
    given = {"transformer": build_tiny_diffusers_wan(seed=0),
             "prompt_embeds": torch.randn(1, 8, TINY_DIFFUSERS_TEXT_DIM, generator=g),
             "first_frame": torch.randn(1, 48, 1, 4, 4, generator=g),
             "frames": 3,
             "rgb_factors": torch.randn(48, 3, generator=g) * 0.2,
             "teacher_dir": tiny_teacher_dir}
    example = tmp_path / "readme_example.py"
    example.write_text(code_block_after("## Use the engine without ComfyUI (diffusers)"))
    namespace = runpy.run_path(str(example), init_globals=given)

    result, video_latent = namespace["result"], namespace["video_latent"]
    assert 1 <= result.iterations <= 40 and capsys.readouterr().out.startswith(str(result.iterations))
    assert video_latent.shape == (1, 48, 3, 4, 4)
    assert torch.equal(video_latent[:, :, 0], given["first_frame"][:, :, 0])  # the first frame stayed clean
    saved = load_file(str(tmp_path / "tto_lora.safetensors"))
    # exported under the original Wan names, as ComfyUI's LoRA loader expects them
    assert "diffusion_model.blocks.0.self_attn.q.lora_down.weight" in saved
    assert not any("attn1" in key or "to_q" in key for key in saved)


def test_the_api_example_names_the_right_nodes():
    code = code_block_after("## Drive it through the API")
    workflow = re.search(r'open\("([^"]+)"\)', code).group(1)
    prompt = json.loads((REPO_ROOT / workflow).read_text())
    uses = dict(re.findall(r'prompt\["(\d+)"\]\["inputs"\]\["(\w+)"\]', code))
    assert uses == {"4": "value", "9": "image"}
    assert prompt["4"]["class_type"] == "PrimitiveStringMultiline" and "value" in prompt["4"]["inputs"]
    assert prompt["9"]["class_type"] == "LoadImage" and "image" in prompt["9"]["inputs"]
    report_node = re.search(r'history\["outputs"\]\["(\d+)"\]', code).group(1)
    assert prompt[report_node]["class_type"] == "TTOLoop"


def test_the_template_table_matches_the_template_titles():
    from tto_runner.example_workflows import TEMPLATE_TITLES

    section = README[README.index("## Templates"):README.index("## Nodes")]
    rows = re.findall(r"^\| (VLM Teacher - [^|]+?) \| `(\w+)\.json` \|", section, flags=re.M)
    assert {stem: title for title, stem in rows} == TEMPLATE_TITLES
