"""The host's 48-channel TAEHV (Wan 2.2 tiny autoencoder) as a trainable module, with the key names and
shapes of ComfyUI's ``comfy/taesd/taehv.py``, so the weights it learns load in stock ``VAELoader``.

Written here (not imported from the host) so that training needs no ComfyUI; the test suite checks that
the host decodes a saved file to the same frames. Training runs every frame at once: a memory block's
"past" is its input one frame earlier (zero before the first), exactly what the host's frame-by-frame
decode feeds it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

LATENT_CHANNELS = 48
PATCH = 2                    # Wan 2.2's TAEHV works on 2x2 pixel patches
DECODER_WIDTHS = (256, 128, 64, 64)
ENCODER_WIDTH = 64
TIME_GROWTH = (1, 2, 2)      # per decoder level: 1 latent frame becomes 4 output frames
FRAMES_TO_TRIM = 3           # the first latent frame's 4 outputs keep only the last


def _conv(c_in: int, c_out: int, bias: bool = True, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=bias)


class Clamp(nn.Module):
    def forward(self, x):
        return torch.tanh(x / 3) * 3


class MemBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Sequential(_conv(2 * c_in, c_out), nn.ReLU(), _conv(c_out, c_out), nn.ReLU(),
                                  _conv(c_out, c_out))
        self.skip = nn.Conv2d(c_in, c_out, 1, bias=False) if c_in != c_out else nn.Identity()

    def forward(self, x, frames: int):
        """x: [B * frames, C, H, W], frames contiguous per video."""
        b = x.shape[0] // frames
        seq = x.view(b, frames, *x.shape[1:])
        past = torch.cat([torch.zeros_like(seq[:, :1]), seq[:, :-1]], 1).reshape_as(x)
        return F.relu(self.conv(torch.cat([x, past], 1)) + self.skip(x))


class TGrow(nn.Module):
    def __init__(self, c: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(c, c * stride, 1, bias=False)

    def forward(self, x):
        """[B * T, C, H, W] -> [B * T * stride, C, H, W] (each frame followed by its new ones)."""
        y = self.conv(x)
        return y.view(x.shape[0] * self.stride, x.shape[1], *x.shape[2:])


class TPool(nn.Module):
    def __init__(self, c: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(c * stride, c, 1, bias=False)

    def forward(self, x):
        n, c, h, w = x.shape
        return self.conv(x.reshape(n // self.stride, self.stride * c, h, w))


def _decoder_layers() -> list[nn.Module]:
    n = DECODER_WIDTHS
    layers: list[nn.Module] = [Clamp(), _conv(LATENT_CHANNELS, n[0]), nn.ReLU()]
    for level, stride in enumerate(TIME_GROWTH):
        layers += [MemBlock(n[level], n[level]) for _ in range(3)]
        layers += [nn.Upsample(scale_factor=2), TGrow(n[level], stride), _conv(n[level], n[level + 1], bias=False)]
    layers += [nn.ReLU(), _conv(n[3], 3 * PATCH * PATCH)]
    return layers


def _encoder_layers() -> list[nn.Module]:
    w = ENCODER_WIDTH
    layers: list[nn.Module] = [_conv(3 * PATCH * PATCH, w), nn.ReLU()]
    for stride in (2, 2, 1):
        layers += [TPool(w, stride), _conv(w, w, bias=False, stride=2)]
        layers += [MemBlock(w, w) for _ in range(3)]
    layers += [_conv(w, LATENT_CHANNELS)]
    return layers


def _run(layers: nn.Sequential, x: torch.Tensor, frames: int) -> tuple[torch.Tensor, int]:
    """Every frame through the layers at once ([B * frames, C, H, W]); returns the output and its frame count,
    which TGrow multiplies and TPool divides."""
    for layer in layers:
        if isinstance(layer, MemBlock):
            x = layer(x, frames)
            continue
        x = layer(x)
        if isinstance(layer, TGrow):
            frames *= layer.stride
        elif isinstance(layer, TPool):
            frames //= layer.stride
    return x, frames


class TAEHV(nn.Module):
    """``decoder``: [B, 48, T, h, w] latents -> [B, 3, 4T-3, 16h, 16w] frames (about [0, 1]);
    ``encoder``: used here for one still frame (the first), [B, 3, H, W] -> [B, 48, H/16, W/16]."""

    def __init__(self):
        super().__init__()
        self.decoder = nn.Sequential(*_decoder_layers())
        self.encoder = nn.Sequential(*_encoder_layers())

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        b, _, t = latent.shape[:3]
        x = latent.movedim(2, 1).reshape(b * t, *latent.shape[1:2], *latent.shape[3:])
        x, frames = _run(self.decoder, x, t)
        x = F.pixel_shuffle(x, PATCH)
        x = x.view(b, frames, 3, *x.shape[2:])
        return x[:, FRAMES_TO_TRIM:].movedim(1, 2)

    def encode_still(self, image: torch.Tensor) -> torch.Tensor:
        """One frame, as the host's TAEHV encoder sees a clip of it repeated 4 times (its padding rule), ->
        the latent of that first frame."""
        x = F.pixel_unshuffle(image, PATCH)            # [B, 12, H/2, W/2]
        b = x.shape[0]
        x = x[:, None].expand(b, 4, *x.shape[1:]).reshape(b * 4, *x.shape[1:])
        x, _ = _run(self.encoder, x, 4)
        return x.view(b, *x.shape[1:])


def save(model: TAEHV, path) -> None:
    """float16 safetensors with the host's key names (stock VAELoader detects it by decoder.22.bias)."""
    from safetensors.torch import save_file

    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"kind": "taehv-wan2.2", "trained_for": "toy ball-to-target"})


def load(path) -> TAEHV:
    from safetensors.torch import load_file

    model = TAEHV()
    model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return model
