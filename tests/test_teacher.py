"""The differentiable teacher against the checkpoint's own processor, and its scoring properties."""

import pytest
import torch
from transformers import AutoProcessor
from transformers.video_utils import VideoMetadata

from tto_engine import Query, VLMTeacher

QUERIES = [Query("Does the yellow ball reach the red square?", "goal"),
           Query("Does the ball avoid every X?", "process"),
           Query("Does the ball leave the maze?", "process", 2.0, "No")]


@pytest.fixture(scope="module")
def processor(tiny_teacher_dir):
    return AutoProcessor.from_pretrained(tiny_teacher_dir, local_files_only=True)


def frames_of(t, h, w, seed=0):
    return torch.rand(t, 3, h, w, generator=torch.Generator().manual_seed(seed))


# sizes already on the 32-pixel grid, sizes that need resizing, and odd frame counts (temporal padding)
SHAPES = [(8, 64, 64), (5, 64, 96), (6, 72, 100), (24, 96, 160)]


@pytest.mark.parametrize("shape", SHAPES)
def test_preprocessing_matches_the_checkpoint_processor(teacher, processor, shape):
    frames = frames_of(*shape)
    mine, grid = teacher.preprocess_video(frames)
    ref = processor.video_processor(videos=[frames * 255], do_sample_frames=False, return_tensors="pt",
                                    cap_pixels_per_frame=False)
    assert grid.tolist() == ref["video_grid_thw"].tolist()
    assert mine.shape == ref["pixel_values_videos"].shape
    on_grid = shape[1] % 32 == 0 and shape[2] % 32 == 0
    tolerance = 1e-6 if on_grid else 1e-5  # resizing: the same bicubic kernel, float rounding apart
    assert (mine - ref["pixel_values_videos"]).abs().max() < tolerance


@pytest.mark.parametrize("shape", SHAPES)
def test_prompt_layout_matches_the_processor(teacher, processor, shape):
    frames = frames_of(*shape)
    _, grid = teacher.preprocess_video(frames)
    indices = list(range(0, 3 * shape[0], 3))
    question = QUERIES[0].text
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "video"},
                                                                       {"type": "text", "text": question}]}],
                                         tokenize=False, add_generation_prompt=True)
    ref = processor(text=[text], videos=[frames * 255], do_sample_frames=False, return_tensors="pt",
                    video_metadata=[VideoMetadata(total_num_frames=3 * shape[0], fps=24, frames_indices=indices)],
                    cap_pixels_per_frame=False)
    ids, types = teacher.video_prompt(question, grid, [i / 24 for i in indices])
    assert ids == ref["input_ids"][0].tolist()
    assert types == ref["mm_token_type_ids"][0].tolist()


def test_gradients_reach_the_pixels_and_match_finite_differences(teacher):
    frames = frames_of(4, 64, 64, seed=1).double().requires_grad_()
    teacher.model.double()
    try:
        loss = teacher.score(frames, QUERIES[:1]).losses.sum()
        (grad,) = torch.autograd.grad(loss, frames)
        assert grad.abs().sum() > 0
        # Along the gradient the change is largest; some Qwen layers compute in float32 even in a float64
        # model, so the step must be large enough to rise above that rounding.
        direction = grad / grad.norm()
        eps = 1e-2
        with torch.no_grad():
            plus = teacher.score(frames + eps * direction, QUERIES[:1]).losses.sum()
            minus = teacher.score(frames - eps * direction, QUERIES[:1]).losses.sum()
        numeric = (plus - minus) / (2 * eps)
        assert torch.allclose(numeric, grad.norm(), rtol=1e-3)
    finally:
        teacher.model.float()


def test_packed_queries_equal_asking_each_alone(teacher):
    """All queries in one sequence over the shared video prefix, versus one full pass per query."""
    frames = frames_of(6, 64, 96, seed=2).requires_grad_()
    packed = teacher.score(frames, QUERIES, packed=True)
    (g_packed,) = torch.autograd.grad(packed.losses.sum(), frames)
    separate = teacher.score(frames, QUERIES, packed=False)
    (g_separate,) = torch.autograd.grad(separate.losses.sum(), frames)
    assert torch.allclose(packed.losses, separate.losses, atol=1e-5)
    assert torch.allclose(packed.scores, separate.scores, atol=1e-5)
    assert torch.allclose(g_packed, g_separate, rtol=1e-4, atol=1e-7)
    alone = torch.stack([teacher.score(frames, [q]).losses[0] for q in QUERIES])  # a single query packs trivially
    assert torch.allclose(packed.losses, alone, atol=1e-5)


def test_packing_shares_the_video_prefix(teacher):
    """The packed sequence holds the video once, where asking each query alone reads it once per query."""
    frames = frames_of(4, 64, 64, seed=3)
    sequences = []
    original = teacher.model.forward

    def record(*args, **kwargs):
        sequences.append(kwargs["input_ids"][0])
        return original(*args, **kwargs)

    teacher.model.forward = record
    try:
        teacher.score(frames, QUERIES, packed=True)
        teacher.score(frames, QUERIES, packed=False)
    finally:
        del teacher.model.forward
    video = [int((ids == teacher.video_token_id).sum()) for ids in sequences]
    assert len(sequences) == 1 + len(QUERIES) and video[0] == video[1] > 0
    separate_text = sum(len(ids) - v for ids, v in zip(sequences[1:], video[1:]))
    assert len(sequences[0]) - video[0] < separate_text  # the chat header is shared too


def test_losses_are_answer_nll_and_scores_compare_yes_with_no(teacher):
    frames = frames_of(4, 64, 64, seed=3)
    yes, no = Query("Is the ball red?", "goal", 1.0, "Yes"), Query("Is the ball red?", "goal", 1.0, "No")
    s = teacher.score(frames, [yes, no])
    p_yes, p_no = torch.exp(-s.losses[0]), torch.exp(-s.losses[1])
    assert torch.allclose(s.p_yes[0], p_yes.detach(), rtol=1e-5)
    assert torch.allclose(s.scores[0], (p_yes / (p_yes + p_no)).detach(), rtol=1e-5)
    assert torch.allclose(s.scores[0] + s.scores[1], torch.tensor(1.0), atol=1e-5)


def test_bad_inputs_get_clear_errors(teacher, tmp_path):
    with pytest.raises(ValueError, match=r"\[T, 3, H, W\]"):
        teacher.score(torch.rand(4, 64, 64, 3), QUERIES)
    with pytest.raises(ValueError, match="query list is empty"):
        teacher.score(frames_of(4, 64, 64), [])
    with pytest.raises(ValueError, match="config.json"):
        VLMTeacher.from_pretrained(tmp_path / "missing")
    with pytest.raises(ValueError, match="empty"):
        teacher.propose_queries("  ", None)


def test_query_synthesis_never_crashes_and_reports_its_source(teacher):
    proposal = teacher.propose_queries("Move the yellow ball to the red square.", frames_of(1, 64, 64)[0],
                                       max_new_tokens=24)
    assert proposal.source in ("teacher", "fallback")
    assert [q.kind for q in proposal.queries].count("goal") == 1
    assert 1 <= [q.kind for q in proposal.queries].count("process") <= 3
    if proposal.source == "fallback":
        assert proposal.notes and proposal.raw is not None


@pytest.fixture(scope="module")
def qwen25(tmp_path_factory):
    from tto_models.qwen import build_tiny_qwen25vl

    folder = build_tiny_qwen25vl(tmp_path_factory.mktemp("qwen25") / "tiny-qwen2.5-vl", seed=0)
    return VLMTeacher.from_pretrained(folder, dtype=torch.float32), AutoProcessor.from_pretrained(
        folder, local_files_only=True)


@pytest.mark.parametrize("shape", [(8, 56, 56), (5, 56, 84), (6, 60, 100)])
def test_qwen25vl_matches_its_processor_too(qwen25, shape):
    teacher, processor = qwen25
    assert teacher.spec.family == "qwen2_5_vl" and teacher.spec.patch_size == 14
    frames = frames_of(*shape)
    mine, grid = teacher.preprocess_video(frames)
    ref = processor.video_processor(videos=[frames * 255], do_sample_frames=False, return_tensors="pt")
    assert grid.tolist() == ref["video_grid_thw"].tolist()
    assert (mine - ref["pixel_values_videos"]).abs().max() < 1e-5
    stamps = [i / 24 for i in range(shape[0])]
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "video"},
                                                                       {"type": "text", "text": "Is it?"}]}],
                                         tokenize=False, add_generation_prompt=True)
    full = processor(text=[text], videos=[frames * 255], do_sample_frames=False, return_tensors="pt",
                     video_metadata=[VideoMetadata(total_num_frames=shape[0], fps=24,
                                                   frames_indices=list(range(shape[0])))])
    ids, types = teacher.video_prompt("Is it?", grid, stamps)
    assert ids == full["input_ids"][0].tolist() and types == full["mm_token_type_ids"][0].tolist()
    assert teacher._seconds_per_grid(stamps) == pytest.approx(float(full["second_per_grid_ts"][0]))
    packed = teacher.score(frames, QUERIES, stamps).losses
    separate = teacher.score(frames, QUERIES, stamps, packed=False).losses
    assert torch.allclose(packed, separate, atol=1e-5)


def test_a_pixel_budget_caps_the_checkpoints_own(tiny_teacher_dir):
    own = VLMTeacher.from_pretrained(tiny_teacher_dir, dtype=torch.float32)
    t, h, w = 8, 256, 256  # 524,288 px: more than the tiny checkpoint's own budget (65,536 px)
    assert own.video_size(t, h, w) < (h, w)
    larger = VLMTeacher.from_pretrained(tiny_teacher_dir, dtype=torch.float32, max_video_pixels=t * h * w)
    assert larger.video_size(t, h, w) == own.video_size(t, h, w)
    smaller = VLMTeacher.from_pretrained(tiny_teacher_dir, dtype=torch.float32, max_video_pixels=16 * 1024)
    sh, sw = smaller.video_size(t, h, w)
    assert sh * sw * t <= 16 * 1024 < own.video_size(t, h, w)[0] * own.video_size(t, h, w)[1] * t
