"""The toy world's trainable models, at a few steps: the reasoner is the host's Wan 2.2 5B network run as
stock image-to-video runs it, and the teacher learns through the pack's own grading path."""

import numpy as np
import pytest
import torch

from tto_models.toy import latent_code as LC
from tto_models.toy import reasoner as R
from tto_models.toy import teacher as T
from tto_models.toy import world as W


def test_reasoner_is_a_stock_wan22_5b_and_keeps_the_first_frame(comfy, tmp_path):
    patcher = R.new(tmp_path / "r.safetensors")
    assert type(patcher.model).__name__ == "WAN22"
    assert type(patcher.model.latent_format).__name__ == "Wan22"
    before = {k: v.clone() for k, v in patcher.model.diffusion_model.state_dict().items()}
    R.train(patcher, R.Schedule(steps=2, batch=2))
    after = patcher.model.diffusion_model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    R.save(patcher, tmp_path / "trained.safetensors")
    reloaded = R.load(tmp_path / "trained.safetensors")          # what UNETLoader does
    first = LC.encode(W.generate_instance(5, 0))[:, 0]
    a = R.sample(patcher.model, first, seed=3)
    b = R.sample(reloaded.model, first, seed=3)
    assert a.shape == LC.SHAPE
    np.testing.assert_allclose(a[:, 0], first, atol=1e-5)        # frame 0 is the start image's code
    np.testing.assert_allclose(a, b, atol=1e-4)
    one = R.sample(patcher.model, first, seed=3, one_step=True)
    assert one.shape == LC.SHAPE and not np.allclose(one, a)


def test_the_still_weight_scales_only_the_channels_that_never_move():
    weights = R.channel_weights(10.0).flatten()
    still = torch.zeros(LC.CHANNELS, dtype=torch.bool)
    still[LC.STILL_CHANNELS] = True
    assert torch.all(weights[still] == 10.0) and torch.all(weights[~still] == 1.0)
    # the weighted channels are the ones a code repeats in every latent frame; the ball's positions move
    code = LC.encode(W.generate_instance(5, 1))
    repeats = np.all(code == code[:, :1], axis=(1, 2, 3))
    positions = [c for c in range(LC.BALL_CHANNEL, LC.TARGET_CHANNEL) if (c - LC.BALL_CHANNEL) % 3 != 2]
    assert repeats[LC.STILL_CHANNELS].all() and not repeats[positions].any()
    with pytest.raises(ValueError, match="positive"):
        R.channel_weights(0.0)


def test_train_reasoner_refuses_a_bad_still_weight_before_writing_anything(tmp_path, capsys):
    from tto_models.toy.__main__ import main

    out = tmp_path / "r.safetensors"
    assert main(["train-reasoner", "--out", str(out), "--still-weight", "-1", "--eval", "0"]) == 2
    assert "loss weight must be positive" in capsys.readouterr().err
    assert not out.exists()


@pytest.fixture(scope="module")
def toy_teacher(tmp_path_factory):
    return T.build(tmp_path_factory.mktemp("toy_teacher") / "teacher")


def test_teacher_reads_small_patches_on_white(toy_teacher):
    assert toy_teacher.spec.patch_size == 8 and toy_teacher.spec.mean == (1.0, 1.0, 1.0)
    frames, times = T.clip_frames(W.render_video(W.generate_instance(5, 1)))
    assert frames.shape == (T.K, 3, 128, 128) and times[-1] == pytest.approx(16 / W.FPS)


def test_examples_are_labelled_by_the_checker_on_their_own_frames():
    examples = T.make_examples(T.TEACHER_SEED, 30)
    assert {e.source for e in examples} == {"drawn"}                 # no decoder or reasoner given
    for e in examples:
        assert e.verdict == W.check_video(e.video, e.instance)
        assert ("obstacles" in e.labels()) == bool(e.instance.obstacles)
    assert any(not all(e.labels().values()) for e in examples) and any(all(e.labels().values()) for e in examples)


def test_teacher_learns_through_the_grading_path(toy_teacher):
    examples = T.make_examples(T.TEACHER_SEED, 8)
    with torch.no_grad():
        before = sum(float(T.example_loss(toy_teacher, e)) for e in examples)
    T.train(toy_teacher, examples, steps=4, batch=8, lr=3e-3)
    with torch.no_grad():
        after = sum(float(T.example_loss(toy_teacher, e)) for e in examples)
    assert after < 0.8 * before
    assert not any(p.requires_grad for p in toy_teacher.model.parameters())


def test_the_query_reply_parses_into_the_family_queries():
    from tto_engine.queries import parse_query_proposal

    for index in range(12):
        instance = W.generate_instance(5, index)
        proposal = parse_query_proposal(T.query_reply(instance), instance.instruction)
        assert proposal.source == "teacher" and not proposal.notes
        assert [(q.text, q.kind, q.answer) for q in proposal.queries] == \
            [(q.text, q.kind, q.answer) for q in T.queries_for(instance)]


def test_teacher_learns_the_query_reply(toy_teacher):
    instance = W.generate_instance(5, 3)
    with torch.no_grad():
        before = float(T.reply_loss(toy_teacher, instance))
    params = list(toy_teacher.model.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=3e-3)
    for _ in range(5):
        loss = T.reply_loss(toy_teacher, instance)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p in params:
        p.requires_grad_(False)
    with torch.no_grad():
        assert float(T.reply_loss(toy_teacher, instance)) < 0.7 * before


def test_token_labels_mark_what_each_vision_token_shows(toy_teacher):
    """One label row per merged vision token (time, rows, columns), from the frames the loop shows."""
    instance = W.generate_instance(5, 4)
    example = T.Example(W.render_video(instance), instance, "drawn", W.check_video(W.render_video(instance), instance))
    labels = T.token_labels(toy_teacher, example)
    tokens = T.vision_tokens(toy_teacher, example)
    assert labels.shape == (tokens.shape[0], len(T.TOKEN_LABELS)) == (5 * 8 * 8, 5)
    grid = labels.view(5, 8, 8, 5)
    bx, by = (int(v) // 16 for v in instance.ball)
    assert grid[0, by, bx, 0] == 1                                       # the ball's token in the first frames
    tx, ty = (int(v) // 16 for v in instance.target_centre)
    assert grid[:, ty, tx, 1].all()                                     # the target never moves
    assert not grid[..., 3].any()                                       # ground truth never touches a mark
    assert grid[-1, ..., 4].any() and not grid[0, ..., 4].any()         # it ends in the square, not starts


def test_vision_pretraining_moves_only_the_vision_tower(toy_teacher):
    examples = T.make_examples(T.TEACHER_SEED, 4)
    visual = {n: p.clone() for n, p in toy_teacher.model.model.visual.named_parameters()}
    language = {n: p.clone() for n, p in toy_teacher.model.model.language_model.named_parameters()}
    T.pretrain_vision(toy_teacher, examples, steps=2, batch=2)
    assert any(not torch.equal(p, visual[n]) for n, p in toy_teacher.model.model.visual.named_parameters())
    assert all(torch.equal(p, language[n]) for n, p in toy_teacher.model.model.language_model.named_parameters())
    assert not any(p.requires_grad for p in toy_teacher.model.parameters())


def test_a_saved_teacher_keeps_the_processor_settings_of_the_folder_it_came_from(tmp_path):
    """The patch size lives in the processor's files, not the model: a resumed teacher written elsewhere must
    carry them, or it loads with the checkpoint family's default patch and reads the frames differently."""
    teacher = T.build(tmp_path / "first")
    T.save(teacher, tmp_path / "resumed", origin=tmp_path / "first")
    assert (tmp_path / "resumed" / "processor_config.json").is_file()
    assert T.load(tmp_path / "resumed").spec.patch_size == 8


def test_train_teacher_refuses_sizes_for_a_resumed_teacher(tmp_path, capsys):
    from tto_models.toy.__main__ import main

    code = main(["train-teacher", "--out", str(tmp_path / "t"), "--resume", str(tmp_path / "old"),
                 "--vision-width", "128", "--n", "1", "--eval", "0"])
    assert code == 2
    assert "--vision-width and --text-layers size a fresh teacher" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


def test_soft_labels_sit_on_the_checker_side_and_grow_surer_with_the_margin():
    ins = next(W.generate_instance(5, i) for i in range(50) if not W.generate_instance(5, i).obstacles)
    gt = ins.centres()
    shares = []
    for f in (0.5, 0.85, 1.0):
        video = W.render_video(ins, np.linspace(gt[0], gt[0] + f * (gt[-1] - gt[0]), W.FRAMES))
        e = T.Example(video, ins, "drawn", W.check_video(video, ins))
        yes = e.yes_shares(2.0)
        assert all((yes[r] > 0.5) == y for r, y in e.labels().items())
        shares.append(yes["goal"])
    assert shares == sorted(shares) and shares[-1] > 0.95 and shares[0] < 0.05


def test_soft_label_training_moves_the_answers_towards_the_shares(toy_teacher):
    examples = T.make_examples(T.TEACHER_SEED, 8)
    with torch.no_grad():
        before = sum(float(T.example_loss(toy_teacher, e, softness=2.0)) for e in examples)
    T.train(toy_teacher, examples, steps=4, batch=8, lr=3e-3, softness=2.0)
    with torch.no_grad():
        after = sum(float(T.example_loss(toy_teacher, e, softness=2.0)) for e in examples)
    assert after < 0.8 * before


def test_the_checker_teacher_answers_like_the_checker_and_its_gradient_moves_the_ball_home():
    from tto_engine import Query
    from tto_models.toy.checker_teacher import CheckerTeacher

    ins = next(W.generate_instance(5, i) for i in range(50) if len(W.generate_instance(5, i).obstacles) == 1)
    queries = [Query(T.QUESTIONS[r], T.KINDS[r]) for r in T.rules_for(ins)]
    teacher = CheckerTeacher(None, ins)
    good, _ = T.clip_frames(W.render_video(ins))
    gt = ins.centres()
    short = np.linspace(gt[0], gt[0] + 0.6 * (gt[-1] - gt[0]), W.FRAMES)
    bad, _ = T.clip_frames(W.render_video(ins, short))
    assert (teacher.score(good, queries).scores > 0.9).all()
    bad.requires_grad_(True)
    answer = teacher.score(bad, queries)
    assert answer.scores[0] < 0.1                               # goal: the ball stopped short
    answer.losses[0].backward()
    # descending the goal loss paints ball colour on the target's side of the last frame's ball
    with torch.no_grad():
        after = teacher.score(bad - 0.5 * bad.grad, queries).losses[0]
    assert float(after) < float(answer.losses[0].detach())
    with pytest.raises(ValueError, match="questions"):
        teacher.score(good, queries[:1])
