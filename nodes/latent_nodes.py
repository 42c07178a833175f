"""Image-to-video latents for Wan 2.2 when the only VAE is a 48-channel TAEHV.

ComfyUI 0.3.75 decodes with a 48-channel TAEHV (taew2_2) but refuses to encode with it, so stock
Wan22ImageToVideoLatent cannot take a start image through it. The TAEHV file holds an encoder all the same;
this node runs it on the start image and builds the latent exactly as the stock node does (first latent
frame from the image, noise mask 0 there, the rest empty).
"""

from __future__ import annotations

import comfy.latent_formats
import comfy.model_management
import comfy.taesd.taehv as taehv
import comfy.utils
import torch
from comfy_api.latest import io

from .validation import check_widgets


def taehv_encoder(vae):
    """The VAE's TAEHV module, or a ValueError that says which node to use instead."""
    first_stage = getattr(vae, "first_stage_model", None)
    if not isinstance(first_stage, taehv.TAEHV) or first_stage.latent_channels != 48:
        raise ValueError("This node encodes with a 48-channel TAEHV (taew2_2, Wan 2.2). For the full Wan 2.2 VAE "
                         "use the stock Wan22ImageToVideoLatent node.")
    return first_stage


def taehv_first_frame(first_stage, image: torch.Tensor) -> torch.Tensor:
    """[1, H, W, 3] image in [0, 1] -> its latent frame [1, 48, 1, H/16, W/16]: the TAEHV's encoder run by the
    host's own block runner on the frame repeated to the four frames one latent frame stands for (the host's
    padding rule). `TAEHV.encode` itself is not used: at patch size 2 it folds frames into channels."""
    weight = next(first_stage.encoder.parameters())
    x = torch.nn.functional.pixel_unshuffle(image[:1].movedim(-1, 1).to(weight.device, weight.dtype).contiguous(),
                                            first_stage.patch_size)
    x = x[:, None].repeat(1, 4, 1, 1, 1)                                          # [1, 4, 12, H/2, W/2]
    with torch.no_grad():
        out = taehv.apply_model_with_memblocks(first_stage.encoder, x, False, False)  # [1, 1, 48, h, w]
    return out.movedim(2, 1).float()


def first_frame_latent(first: torch.Tensor, frames: int) -> dict:
    """The LATENT stock Wan22ImageToVideoLatent builds around a first latent frame [1, 48, 1, h, w]: `frames`
    latent frames, the first kept (noise mask 0), the others empty."""
    latent = torch.zeros([1, 48, frames, *first.shape[-2:]])
    latent[:, :, :1] = first.cpu()
    mask = torch.ones([1, 1, frames, *first.shape[-2:]])
    mask[:, :, :1] = 0.0
    latent = comfy.latent_formats.Wan22().process_out(latent) * mask + latent * (1.0 - mask)
    device = comfy.model_management.intermediate_device()
    return {"samples": latent.to(device), "noise_mask": mask.to(device)}


def image_to_video_latent(vae, start_image: torch.Tensor, width: int, height: int, length: int) -> dict:
    first_stage = taehv_encoder(vae)
    image = comfy.utils.common_upscale(start_image[:1].movedim(-1, 1), width, height, "bilinear",
                                       "center").movedim(1, -1)
    return first_frame_latent(taehv_first_frame(first_stage, image), ((length - 1) // 4) + 1)


class TAEHVImageToVideoLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TAEHVImageToVideoLatent",
            display_name="Wan 2.2 Image to Video Latent (TAEHV)",
            category="video reasoning/utils",
            description="Stock Wan22ImageToVideoLatent, but encoding the start image with a 48-channel TAEHV "
                        "(taew2_2), which ComfyUI can decode with but not encode. Use it when the TAEHV is the "
                        "only VAE you have; with the full Wan 2.2 VAE use the stock node.",
            inputs=[
                io.Vae.Input("vae", tooltip="A 48-channel TAEHV (Wan 2.2 tiny autoencoder) from Load VAE."),
                io.Image.Input("start_image", tooltip="The first frame; its latent is kept fixed while sampling."),
                io.Int.Input("width", default=1280, min=32, max=8192, step=32, tooltip="Video width (pixels)."),
                io.Int.Input("height", default=704, min=32, max=8192, step=32, tooltip="Video height (pixels)."),
                io.Int.Input("length", default=49, min=1, max=8192, step=4,
                             tooltip="Frames (4k+1: Wan 2.2 packs 4 frames per latent frame after the first)."),
            ],
            outputs=[io.Latent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, vae, start_image, width, height, length) -> io.NodeOutput:
        check_widgets(cls, locals())
        return io.NodeOutput(image_to_video_latent(vae, start_image, width, height, length))
