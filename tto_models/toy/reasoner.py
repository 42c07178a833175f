"""The toy reasoner: the host's own Wan 2.2 TI2V-5B network (``comfy.ldm.wan.model.WanModel``, 48 latent
channels, patch 1x2x2, the 5B layout at dim 256 and 4 layers), trained by flow matching on ground-truth codes
of the designed latent space, exactly as stock ComfyUI runs it: the first latent frame clean with timestep 0
(Wan 2.2's image-to-video mask), the others noised, x0 read through the host's model sampling.

Training it briefly is the point: it learns plausible motion from the first frame to the target and makes
the systematic errors of an under-trained video model (stopping short, cutting through the marks).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch

from . import latent_code as LC
from . import world
from .optim import Progress, clipped_step

REASONER_SEED = 200       # instance stream of the training videos
CHECK_SEED = 1000
PROMPT_SEED = 7           # the fixed prompt embedding (the toy has no text encoder)
DIM, LAYERS, FFN_DIM = 256, 4, 768
SAMPLE_STEPS = 4


def host():
    """The host's `comfy` package, imported in process on the CPU."""
    if "comfy.sd" not in sys.modules:
        from tto_runner.local_server import default_host_dir

        root = str(default_host_dir())
        if root not in sys.path:
            sys.path.insert(0, root)
        import comfy.cli_args
        comfy.cli_args.args.cpu = True
        import comfy.sd  # noqa: F401
    import comfy.sample  # noqa: F401
    import comfy.samplers  # noqa: F401
    return sys.modules["comfy"]


def prompt_embedding() -> torch.Tensor:
    from tto_models.wan import tiny_conditioning

    return tiny_conditioning(PROMPT_SEED)


def load(path):
    """A toy reasoner file loaded by the host's own loader (what UNETLoader does): a ModelPatcher."""
    comfy = host()
    return comfy.sd.load_diffusion_model(str(path))


def new(path, seed: int = 0):
    """A fresh (random) reasoner file at `path`, loaded."""
    from tto_models.wan import write_tiny_comfy_wan

    write_tiny_comfy_wan(path, seed=seed, dim=DIM, layers=LAYERS, ffn_dim=FFN_DIM)
    return load(path)


def save(patcher, path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().float().contiguous() for k, v in patcher.model.diffusion_model.state_dict().items()}
    save_file(state, str(path), metadata={"kind": "wan2.2-ti2v-5b-layout", "trained_for": "toy ball-to-target"})


def first_frame_mask(batch: int) -> torch.Tensor:
    """Wan 2.2's image-to-video noise mask: 0 on latent frame 0 (kept), 1 elsewhere."""
    mask = torch.ones(batch, 1, LC.LATENT_FRAMES, LC.GRID, LC.GRID)
    mask[:, :, 0] = 0
    return mask


def denoise(model, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """x0 from the host's model (sampler space), frame 0 timestep 0 as in stock image-to-video."""
    mask = first_frame_mask(x.shape[0])
    return model.apply_model(x, sigma, c_crossattn=context.expand(x.shape[0], -1, -1), denoise_mask=mask)


@dataclass
class Schedule:
    steps: int
    batch: int = 16
    lr: float = 1e-3
    still_weight: float = 1.0   # loss weight of the still channels (target, marks, ink) against the ball's

    def __post_init__(self):
        channel_weights(self.still_weight)   # refuse a bad weight before any model is built or written


def channel_weights(still_weight: float) -> torch.Tensor:
    """[1, 48, 1, 1, 1] loss weights: `still_weight` on what never moves, 1 elsewhere. A video model keeps
    the scene long before it gets the motion right; weighting the still channels gives the toy reasoner that
    order, so its brief training leaves the rule breaks in the ball's path and not in erased marks."""
    if not still_weight > 0:
        raise ValueError(f"The still channels' loss weight must be positive, got {still_weight}.")
    weights = torch.ones(LC.CHANNELS)
    weights[LC.STILL_CHANNELS] = still_weight
    return weights.view(1, -1, 1, 1, 1)


def train(patcher, schedule: Schedule, seed: int = 1, log=print, checkpoint=None, checkpoint_every: int = 0,
          encoder=None, start_index: int = 0):
    """Flow matching on ground-truth codes of the REASONER_SEED stream, x0 loss on the generated frames.
    `checkpoint(step)` is called every `checkpoint_every` steps (with the network in eval mode). With a TAEHV
    `encoder`, latent frame 0 is what that encoder writes for the first frame (as the pack's node feeds it)
    instead of the exact code."""
    model = patcher.model
    net = model.diffusion_model
    net.train()
    params = list(net.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=schedule.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    sigmas = model.model_sampling.sigmas.float()
    context = prompt_embedding()
    progress = Progress("reasoner", schedule.steps, log)
    weights = channel_weights(schedule.still_weight)
    for step in range(schedule.steps):
        instances = [world.generate_instance(REASONER_SEED, start_index + step * schedule.batch + i)
                     for i in range(schedule.batch)]
        codes = torch.from_numpy(np.stack([LC.encode(instance) for instance in instances]))
        if encoder is not None:
            firsts = np.stack([world.first_frame(instance) for instance in instances])
            with torch.no_grad():
                codes[:, :, 0] = encoder.encode_still(torch.from_numpy(firsts).permute(0, 3, 1, 2).float() / 255.0)
        z = model.process_latent_in(codes)
        sigma = sigmas[torch.randint(len(sigmas), (schedule.batch,), generator=gen)]
        noise = torch.randn(z.shape, generator=gen)
        s = sigma.view(-1, 1, 1, 1, 1)
        x = torch.cat([z[:, :, :1], (1 - s) * z[:, :, 1:] + s * noise[:, :, 1:]], 2)
        x0 = denoise(model, x, sigma, context)
        loss = (weights * (x0[:, :, 1:] - z[:, :, 1:]) ** 2).mean()
        clipped_step(opt, loss, params)
        progress(step, loss)
        if checkpoint is not None and checkpoint_every and (step + 1) % checkpoint_every == 0:
            net.eval()
            with torch.no_grad():
                checkpoint(step + 1)
            net.train()
    net.eval()
    for p in params:
        p.requires_grad_(False)
    return patcher


def sample_sigmas(model, steps: int = SAMPLE_STEPS) -> torch.Tensor:
    return host().samplers.calculate_sigmas(model.model_sampling, "simple", steps).float()


@torch.no_grad()
def sample(model, first_code: np.ndarray, seed: int, steps: int = SAMPLE_STEPS, one_step: bool = False) -> np.ndarray:
    """Euler sampling as the stock KSampler ("euler", "simple") runs it, frame 0 held at the first frame's
    code: the reasoner's video as a code [48, 5, 8, 8] (VAE space). `one_step`: the x0 prediction of the
    first step instead (what the loop grades in its one-step gradient mode)."""
    comfy = host()
    latent = np.zeros(LC.SHAPE, np.float32)
    latent[:, 0] = first_code
    start = torch.from_numpy(latent)[None]
    noise = comfy.sample.prepare_noise(start, seed)
    z0 = model.process_latent_in(start)
    sig = sample_sigmas(model, steps)
    x = z0 * (1 - sig[0]) + noise * sig[0]
    context = prompt_embedding()
    for i in range(steps):
        x[:, :, :1] = z0[:, :, :1]
        x0 = denoise(model, x, sig[i:i + 1], context)
        x0[:, :, :1] = z0[:, :, :1]
        if one_step:
            return model.process_latent_out(x0)[0].numpy()
        x = x0 + (x - x0) * (sig[i + 1] / sig[i])
    return model.process_latent_out(x)[0].numpy()


def evaluate(patcher, n: int, seed: int = CHECK_SEED, decoder=None) -> dict:
    """Sample each of n held-out instances once from its true first-frame code; verdicts on the code
    (plan), how well it keeps the scene (`latent_code.scene_kept`, averaged) and, with a TAEHV decoder,
    verdicts on the decoded video (what the checker sees)."""
    from .code_autoencoder import to_uint8

    model = patcher.model
    plan, video, scene = [], [], []
    for i in range(n):
        instance = world.generate_instance(seed, i)
        code = sample(model, LC.encode(instance)[:, 0], seed=i)
        plan.append(LC.plan_verdict(code, instance))
        scene.append(LC.scene_kept(code, instance))
        if decoder is not None:
            with torch.no_grad():
                frames = to_uint8(decoder.decode(torch.from_numpy(code)[None])[0])
            video.append(world.check_video(frames, instance))

    inks = [s["ink_kept"] for s in scene if s["ink_kept"] is not None]
    out = {"n": n, "plan": world.tally(plan),
           "scene": {"ink_kept": round(float(np.mean(inks)), 3) if inks else None,
                     "target_drift_px": round(float(np.mean([s["target_drift_px"] for s in scene])), 2)}}
    if video:
        out["video"] = world.tally(video)
    return out
