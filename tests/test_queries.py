"""The query parser on messy teacher output, and the loss combination."""

import math

import pytest
import torch

from tto_engine.queries import (Query, combine_losses, fallback_queries, parse_query_proposal, queries_from_json,
                                queries_to_json)

INSTRUCTION = "Move the yellow ball to the red square without touching the X."
GOAL = "By the end of the video, does the yellow ball reach the red square?"
PROC1 = "Does the yellow ball avoid all X crosses?"
PROC2 = "Does the yellow ball stay intact, without splitting or vanishing?"

# (reply, expected goal text, expected process texts, expected source)
CORPUS = [
    ('{"goal": "%s", "process": ["%s", "%s"]}' % (GOAL, PROC1, PROC2), GOAL, [PROC1, PROC2], "teacher"),
    ('Sure! Here are the questions:\n```json\n{"goal": "%s",\n "process": ["%s",]}\n```\nHope this helps.'
     % (GOAL, PROC1), GOAL, [PROC1], "teacher"),
    ("{'goal': '%s', 'process': ['%s']}" % (GOAL.replace("'", ""), PROC1), GOAL, [PROC1], "teacher"),
    ('{"goal_query": "%s", "process_queries": [{"question": "%s"}, {"question": "%s"}]}' % (GOAL, PROC1, PROC2),
     GOAL, [PROC1, PROC2], "teacher"),
    ('{"queries": [{"type": "goal", "question": "%s"}, {"type": "process", "question": "%s"}]}' % (GOAL, PROC1),
     GOAL, [PROC1], "teacher"),
    ("Goal: %s\nProcess: %s\nProcess: %s" % (GOAL, PROC1, PROC2), GOAL, [PROC1, PROC2], "teacher"),
    ("1. %s\n2. %s" % (GOAL, PROC1), GOAL, [PROC1], "teacher"),
    # a goal without a question mark gets one; too many process questions are cut to three
    ('{"goal": "By the end of the video, does the yellow ball reach the red square", "process": '
     '["Does A hold?", "Does B hold?", "Does C hold?", "Does D hold?"]}',
     GOAL, ["Does A hold?", "Does B hold?", "Does C hold?"], "teacher"),
]


@pytest.mark.parametrize("reply,goal,process,source", CORPUS)
def test_parser_reads_messy_replies(reply, goal, process, source):
    p = parse_query_proposal(reply, INSTRUCTION)
    assert p.source == source
    assert [q.text for q in p.queries if q.kind == "goal"] == [goal]
    assert [q.text for q in p.queries if q.kind == "process"] == process
    assert all(q.answer == "Yes" for q in p.queries)


@pytest.mark.parametrize("reply", ["", "I cannot help with that.", "{not json at all", "<|im_end|>" * 3,
                                   '{"goal": "", "process": []}', "\x00\x01 garbage ??? !!"])
def test_parser_falls_back_and_says_so(reply):
    p = parse_query_proposal(reply, INSTRUCTION)
    assert p.source == "fallback"
    assert p.notes and "instruction" in p.notes[0]
    assert [q.kind for q in p.queries].count("goal") == 1
    assert 1 <= [q.kind for q in p.queries].count("process") <= 3
    assert "yellow ball" in p.queries[0].text  # derived from the instruction


def test_parser_fixes_counts_and_notes_it():
    reply = '{"goal": ["Is A done?", "Is B done?"], "process": []}'
    p = parse_query_proposal(reply, INSTRUCTION)
    kinds = [(q.kind, q.text) for q in p.queries]
    assert kinds[0] == ("goal", "Is A done?")
    assert ("process", "Is B done?") in kinds
    assert any("goal questions came back" in n for n in p.notes)


def test_parser_missing_process_is_filled_and_noted():
    p = parse_query_proposal('{"goal": "%s"}' % GOAL, INSTRUCTION)
    assert p.source == "teacher"
    assert [q.kind for q in p.queries] == ["goal", "process"]
    assert any("No process question" in n for n in p.notes)


def test_negatively_phrased_questions_target_no():
    reply = '{"goal": "%s", "process": ["Does the yellow ball touch any X?", "%s"]}' % (GOAL, PROC1)
    p = parse_query_proposal(reply, INSTRUCTION)
    answers = {q.text: q.answer for q in p.queries}
    assert answers["Does the yellow ball touch any X?"] == "No"
    assert answers[PROC1] == "Yes"  # "avoid" keeps the rule: Yes means satisfied
    assert any("violation" in n for n in p.notes)


def test_explicit_expected_answer_is_respected():
    reply = '{"goal": "%s", "process": [{"question": "Does the ball leave the maze?", "expected": "no"}]}' % GOAL
    p = parse_query_proposal(reply, INSTRUCTION)
    assert [q.answer for q in p.queries] == ["Yes", "No"]


def test_queries_round_trip_json():
    qs = [Query(GOAL, "goal", 2.0), Query(PROC1, "process", 1.0, "No")]
    assert queries_from_json(queries_to_json(qs)) == qs


def test_bad_query_values_raise_clear_errors():
    with pytest.raises(ValueError, match="question text"):
        Query("  ")
    with pytest.raises(ValueError, match="kind"):
        Query("Is it?", "final")
    with pytest.raises(ValueError, match="weight"):
        Query("Is it?", "goal", 0.0)


def test_combine_losses_follows_the_paper():
    qs = [Query("g?", "goal"), Query("p1?", "process"), Query("p2?", "process")]
    losses = torch.tensor([1.0, 2.0, 4.0])
    total = combine_losses(losses, qs, goal_weight=0.5)
    assert math.isclose(float(total), 0.5 * 1.0 + 0.5 * 3.0)
    # weights average within a group; a lone group is its own mean
    qs_w = [Query("g?", "goal"), Query("p1?", "process", 3.0), Query("p2?", "process", 1.0)]
    assert math.isclose(float(combine_losses(losses, qs_w, 0.25)), 0.25 * 1.0 + 0.75 * (0.75 * 2 + 0.25 * 4))
    assert math.isclose(float(combine_losses(losses[1:], qs[1:], 0.5)), 3.0)
    with pytest.raises(ValueError):
        combine_losses([], [], 0.5)


def test_fallback_queries_are_well_formed():
    qs = fallback_queries("Stack the blocks.")
    assert qs[0].kind == "goal" and "Stack the blocks" in qs[0].text
    assert all(q.text.endswith("?") for q in qs)


def test_rewritten_prompt_is_cleaned_or_rejected():
    from tto_engine.queries import clean_rewrite

    reply = '```\nPrompt: "A yellow ball rolls right, then down, around the black X, and stops on the red square."\n```'
    assert clean_rewrite(reply) == ("A yellow ball rolls right, then down, around the black X, and stops on "
                                    "the red square.")
    assert clean_rewrite("") is None
    assert clean_rewrite("?? !! 42") is None
