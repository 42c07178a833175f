"""The toy world's trainable TAEHV is the host's: same keys and shapes, and a file it writes decodes in
stock ComfyUI to the same frames as in training."""

import numpy as np
import pytest
import torch

from tto_models.toy import latent_code as LC
from tto_models.toy import taehv as T
from tto_models.toy import world as W
from tto_models.toy.__main__ import main as toy_cli
from tto_models.vae import taehv_shapes


def test_state_dict_has_the_host_layout():
    state = T.TAEHV().state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == dict(taehv_shapes())


def test_trained_file_decodes_the_same_in_the_host(comfy, tmp_path):
    out = tmp_path / "toy_taehv.safetensors"
    assert toy_cli(["train-autoencoder", "--out", str(out), "--decoder-steps", "2", "--batch", "2",
                    "--encoder-steps", "1", "--judge", "0", "--threads", "1"]) == 0
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(out)))
    code = torch.from_numpy(LC.encode(W.generate_instance(5, 0)))[None]
    with torch.no_grad():
        ours = T.load(out).decode(code)                               # [1, 3, 17, 128, 128]
        host = vae.decode(code)                                       # [1, 17, 128, 128, 3]
    assert host.shape == (1, 17, 128, 128, 3)
    np.testing.assert_allclose(host[0].numpy(), ours[0].permute(1, 2, 3, 0).numpy(), atol=2e-3)


def test_first_frame_node_encodes_with_the_taehv_encoder(comfy, pack, tmp_path):
    """Stock 0.3.75 cannot encode with a 48-channel TAEHV; the pack's node runs the file's encoder and builds
    the latent as stock Wan22ImageToVideoLatent does."""
    latent_nodes = pack("nodes.latent_nodes")
    out = tmp_path / "toy_taehv.safetensors"
    T.save(T.TAEHV(), out)
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(out)))
    frame = W.render_video(W.generate_instance(5, 2))[0]
    image = torch.from_numpy(frame).float()[None] / 255.0                       # [1, H, W, 3] as LoadImage gives
    latent = latent_nodes.image_to_video_latent(vae, image, 128, 128, 17)
    assert latent["samples"].shape == (1, 48, 5, 8, 8) and latent["noise_mask"].shape == (1, 1, 5, 8, 8)
    assert not latent["noise_mask"][:, :, 0].any() and latent["noise_mask"][:, :, 1:].all()
    with torch.no_grad():
        ours = T.load(out).encode_still(image.permute(0, 3, 1, 2))
    np.testing.assert_allclose(latent["samples"][0, :, 0].numpy(), ours[0].numpy(), atol=2e-3)
    with pytest.raises(ValueError, match="48-channel TAEHV"):
        latent_nodes.taehv_encoder(object())
