"""Grading: which frames the teacher sees, when they happen, and how the answers become one loss."""

import pytest
import torch

from tto_engine import Query, combine_losses, frame_times, grade_frames, grade_video, sample_frame_indices

QUERIES = [Query("Does the yellow ball reach the red square?", "goal"),
           Query("Does the ball avoid every X?", "process"),
           Query("Does the ball leave the maze?", "process", 2.0, "No")]


def test_frame_sampling_is_uniform_with_both_ends():
    idx = sample_frame_indices(89, 24)
    assert idx[0] == 0 and idx[-1] == 88 and len(idx) == 24
    gaps = [b - a for a, b in zip(idx, idx[1:])]
    assert max(gaps) - min(gaps) <= 1
    assert sample_frame_indices(9, 24) == list(range(9))  # fewer frames than K: all of them
    assert sample_frame_indices(9, 1) == [0]
    with pytest.raises(ValueError, match="no frames"):
        sample_frame_indices(0, 4)
    with pytest.raises(ValueError, match="at least 1"):
        sample_frame_indices(9, 0)


def test_frame_times_follow_the_real_video_clock():
    assert frame_times([0, 2, 4], video_fps=24.0) == [0.0, 2 / 24, 4 / 24]
    # one decoded frame per latent frame (linear RGB map): latent frame i is video frame 4i
    assert frame_times([0, 1, 2], video_fps=16.0, temporal_stride=4) == [0.0, 0.25, 0.5]
    with pytest.raises(ValueError, match="frame rate"):
        frame_times([0], video_fps=0.0)


def test_grade_video_is_sampling_then_one_teacher_pass_then_lambda(teacher):
    video = torch.rand(13, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    grade = grade_video(teacher, video, QUERIES, k=5, video_fps=8.0, goal_weight=0.3, temporal_stride=1)
    idx = sample_frame_indices(13, 5)
    direct = teacher.score(video[idx], QUERIES, [i / 8.0 for i in idx])
    assert grade.frames == 5
    assert torch.equal(grade.losses, direct.losses)
    assert torch.equal(grade.loss, combine_losses(direct.losses, QUERIES, 0.3))
    assert grade.score == pytest.approx(float(combine_losses(direct.scores, QUERIES, 0.3)))
    rows = grade.query_rows(QUERIES)
    assert [r["expected"] for r in rows] == ["Yes", "Yes", "No"] and all(0 <= r["score"] <= 1 for r in rows)


def test_grading_needs_a_query(teacher):
    with pytest.raises(ValueError, match="query list is empty"):
        grade_frames(teacher, torch.rand(2, 3, 64, 64), [0.0, 0.5], [], goal_weight=0.5)
