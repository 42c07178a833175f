"""The loop's decoders inside the real host: decoding only the graded frames of ComfyUI's TAEHV gives the
host's own frames and the same gradient as decoding everything."""

import pytest
import torch

from tto_engine import decode_for_grading
from tto_models.vae import write_tiny_taehv


@pytest.fixture(scope="module")
def taehv_vae(comfy, tmp_path_factory):
    path = write_tiny_taehv(tmp_path_factory.mktemp("taehv") / "taehv.safetensors", seed=3)
    return comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(path)))


class Model:
    """Just the latent format of a Wan 2.2 MODEL, which is all a decoder reads from it."""

    def __init__(self, comfy):
        import comfy.model_base
        import comfy.supported_models

        self.model = comfy.model_base.WAN22(comfy.supported_models.WAN22_T2V({"image_model": "wan2.1"}))


def test_graded_frames_equal_the_hosts_decode_with_the_same_gradient(comfy, pack, taehv_vae):
    loop_decoders = pack("nodes.loop_decoders")
    model = Model(comfy)
    decoder = loop_decoders.vae_decoder(taehv_vae, model)
    latent = torch.randn(1, 48, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    assert decoder.frame_count(4) == 13

    full_latent = latent.clone().requires_grad_()
    video = decoder(full_latent)  # the host's TAEHV.decode, every frame with gradients
    assert video.shape == (13, 3, 64, 64)
    graded_latent = latent.clone().requires_grad_()
    frames, indices, total = decode_for_grading(decoder, graded_latent, k=5)
    assert total == 13 and indices == [0, 3, 6, 9, 12]
    assert torch.equal(frames, video[indices])

    weights = torch.randn_like(frames)
    (video[indices] * weights).sum().backward()
    (frames * weights).sum().backward()
    assert torch.allclose(graded_latent.grad, full_latent.grad, rtol=1e-5, atol=1e-7)
    assert graded_latent.grad.abs().sum() > 0


def test_frames_not_graded_keep_no_activations(comfy, pack, taehv_vae):
    loop_decoders = pack("nodes.loop_decoders")
    decoder = loop_decoders.vae_decoder(taehv_vae, Model(comfy))
    latent = torch.randn(1, 48, 6, 4, 4, generator=torch.Generator().manual_seed(1)).requires_grad_()

    weights = {p.untyped_storage().data_ptr() for p in taehv_vae.first_stage_model.parameters()}

    def kept_bytes(run):  # activations autograd keeps, each storage once, weights not counted
        storages = {}

        def pack_hook(t):
            if t.untyped_storage().data_ptr() not in weights:
                storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack_hook, lambda t: t):
            run()
        return sum(storages.values())

    everything = kept_bytes(lambda: decoder(latent))
    two_of_21 = kept_bytes(lambda: decoder(latent, [0, 20]))
    assert two_of_21 < 0.2 * everything
