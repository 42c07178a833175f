"""tto-bench's parts that need no ComfyUI server: task discovery, template filling and the instruction slot,
settings, latent sizes, records from node reports, resume decisions, error classification, the local
server's command and the health check."""

from __future__ import annotations

import http.server
import importlib
import json
import sys
import threading
import tomllib
from pathlib import Path

import pytest
import requests
import websocket

from tto_runner import REPO_ROOT, ComfyClient, ServerConnectionError, cache_root, server_answers
from tto_runner.bench import (METHODS, MODEL_SETS, TEMPLATE_DIR, BenchError, Task, build_parser, discover_tasks,
                              fill_template, latent_size, load_template, main)
from tto_runner.bench.cli import local_server
from tto_runner.bench.records import (Summary, base_record, counts_as_done, equal_wall_n, read_reports, run_means,
                                      sampler_cost, summarise_reports)
from tto_runner.bench.scheduler import LocalIOError, TaskQueue, describe_error, is_server_error, save_video
from tto_runner.bench.templates import LATENT_NODES, check_settings, config_hash, instruction_slots
from tto_runner.demo import draw_first_frame, models_cache
from tto_runner.toy_models import (ENV_VAR, TOY_LAYOUT, ToyModelsError, available_toy_models, ensure_toy_models,
                                   train_command)
from tto_runner.toy_models import models_cache as toy_models_cache

PROMPT = "Slide the blue cube onto the green circle."   # not the templates' own text, so a fill shows
NEGATIVE = "blurry, static, distorted"


@pytest.fixture
def task(tmp_path) -> Task:
    folder = tmp_path / "tasks" / "split" / "T_data-generator" / "00000"
    folder.mkdir(parents=True)
    draw_first_frame(96).save(folder / "first_frame.png")
    (folder / "prompt.txt").write_text(PROMPT + "\n")
    (found,) = discover_tasks(tmp_path / "tasks")
    return found


def by_class(prompt: dict) -> dict:
    out = {}
    for node in prompt.values():
        out.setdefault(node["class_type"], []).append(node["inputs"])
    return out


# ------------------------------------------------------------------------------------------- tasks


def test_task_discovery_and_bad_folders(tmp_path):
    root = tmp_path / "tasks"
    ok = root / "split" / "T_data-generator" / "00000"
    ok.mkdir(parents=True)
    draw_first_frame(96).save(ok / "first_frame.png")
    (ok / "prompt.txt").write_text("  do it \n")
    cases = {"empty_prompt": ("", True, "is empty"), "no_image": ("x", False, "without first_frame.png"),
             "broken_image": ("x", "broken", "cannot be read as an image"), "thin": ("x", (256, 40), "aspect ratio"),
             "small": ("x", (16, 16), "at least 32 px")}
    for name, (text, image, _) in cases.items():
        folder = root / "split" / name / "00000"
        folder.mkdir(parents=True)
        (folder / "prompt.txt").write_text(text)
        if image == "broken":
            (folder / "first_frame.png").write_bytes(b"\x89PNG not really")
        elif isinstance(image, tuple):
            draw_first_frame(64).resize(image).save(folder / "first_frame.png")
        elif image:
            draw_first_frame(64).save(folder / "first_frame.png")
    no_prompt = root / "split" / "no_prompt" / "00000"
    no_prompt.mkdir(parents=True)
    draw_first_frame(64).save(no_prompt / "first_frame.png")
    (root / "split" / "unrelated").mkdir()
    tasks = {t.id: t for t in discover_tasks(root)}
    assert list(tasks) == sorted(tasks)
    assert set(tasks) == {"split/T_data-generator/00000", "split/no_prompt/00000"} | {f"split/{n}/00000" for n in cases}
    good = tasks["split/T_data-generator/00000"]
    assert good.error is None and good.prompt == "do it" and good.size == (96, 96)
    for name, (_, _, why) in cases.items():
        assert why in tasks[f"split/{name}/00000"].error
    assert "without prompt.txt" in tasks["split/no_prompt/00000"].error
    with pytest.raises(BenchError, match="not a folder"):
        discover_tasks(tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------- templates


def test_latent_size_policies():
    assert latent_size((64, 64), "template", (64, 64)) == (64, 64)
    assert latent_size((832, 480), "image", (832, 480)) == (832, 480)
    assert latent_size((500, 300), "image", (832, 480)) == (512, 288)       # rounded to multiples of 32
    w, h = latent_size((1920, 1080), "image", (832, 480))                   # capped at the template's pixels
    assert w % 32 == 0 and h % 32 == 0 and w * h <= 832 * 480 and abs(w / h - 16 / 9) < 0.1
    assert latent_size((10, 10), "200x100", (64, 64)) == (192, 96)
    with pytest.raises(BenchError, match="WIDTHxHEIGHT"):
        latent_size((64, 64), "large", (64, 64))


def test_templates_exist_for_every_method_and_fill(task):
    settings = {"seed": 7, "steps": 3, "cfg": 1.0}
    for method in METHODS:
        for models in MODEL_SETS:
            template = load_template(TEMPLATE_DIR / f"{method}_{models}.json")
            prompt, applied = fill_template(template, task, "tto_bench/x/first_frame.png", settings, "pre/fix",
                                            "image" if models == "wan22" else "template")
            nodes = by_class(prompt)
            assert all(n["image"] == "tto_bench/x/first_frame.png" for n in nodes["LoadImage"])
            assert [n["filename_prefix"] for n in nodes["SaveVideo"]] == ["pre/fix"]
            assert {"seed", "steps"} <= applied
            if models == "wan22" or method != "baseline":  # the tiny baseline has no text input at all
                assert "prompt" in applied
                assert [n.get("value") for n in nodes["PrimitiveStringMultiline"]] == [PROMPT]
            (latent,) = [n for cls in LATENT_NODES for n in nodes.get(cls, [])]
            # wan22: the image's size; tiny and toy: the template's
            expected = {"wan22": (96, 96), "tiny": (64, 64), "toy": (128, 128)}[models]
            assert (latent["width"], latent["height"]) == expected
            assert template == load_template(TEMPLATE_DIR / f"{method}_{models}.json")  # the template is untouched


def with_negative_primitive(template: dict) -> dict:
    """The wan22 baseline with its negative prompt typed into a string primitive, as a user's workflow may be."""
    template = json.loads(json.dumps(template))
    negative_encoder = next(k for k, v in template.items() if v["class_type"] == "KSampler")
    negative_encoder = template[negative_encoder]["inputs"]["negative"][0]
    template["30"] = {"class_type": "PrimitiveStringMultiline", "inputs": {"value": NEGATIVE}}
    template[negative_encoder]["inputs"]["text"] = ["30", 0]
    return template


@pytest.mark.parametrize("marked", [True, False])
def test_a_negative_prompt_string_keeps_its_text(task, marked):
    template = with_negative_primitive(load_template(TEMPLATE_DIR / "baseline_wan22.json"))
    assert template["4"]["inputs"]["value"] != PROMPT
    if not marked:
        for node in template.values():
            node.pop("_meta", None)
    prompt, applied = fill_template(template, task, "x.png", {}, "p")
    assert "prompt" in applied
    assert prompt["30"]["inputs"]["value"] == NEGATIVE
    assert prompt["4"]["inputs"]["value"] == PROMPT  # the primitive wired to the positive encoder


def test_a_user_workflow_with_inline_texts_gets_the_prompt_in_the_positive_encoder(task):
    template = load_template(TEMPLATE_DIR / "baseline_wan22.json")
    template["5"]["inputs"]["text"] = "a typed-in positive prompt"
    del template["4"]
    negative = template["6"]["inputs"]["text"]
    prompt, _ = fill_template(template, task, "x.png", {}, "p")
    assert prompt["5"]["inputs"]["text"] == PROMPT and prompt["6"]["inputs"]["text"] == negative


def test_an_ambiguous_instruction_is_refused_until_one_is_titled(task):
    template = load_template(TEMPLATE_DIR / "tto_wan22.json")
    for node in template.values():
        node.pop("_meta", None)
    # The teacher reads its own primitive now, the encoder another one: two candidates.
    template["4"]["inputs"]["value"] = "the template's own text"
    template["31"] = {"class_type": "PrimitiveString", "inputs": {"value": "for the teacher"}}
    template["12"]["inputs"]["instruction"] = ["31", 0]
    with pytest.raises(BenchError, match=r"node 4 \(PrimitiveStringMultiline\), node 31 \(PrimitiveString\)"):
        instruction_slots(template)
    with pytest.raises(BenchError, match="title 'instruction'"):
        check_settings(template, {}, "mine.json")
    template["31"]["_meta"] = {"title": "Instruction"}
    prompt, _ = fill_template(template, task, "x.png", {}, "p")
    assert prompt["31"]["inputs"]["value"] == PROMPT
    assert prompt["4"]["inputs"]["value"] == "the template's own text"


def test_a_wrong_instruction_title_is_refused():
    template = load_template(TEMPLATE_DIR / "tto_tiny.json")
    loop = next(k for k, v in template.items() if v["class_type"] == "TTOLoop")
    template[loop]["_meta"] = {"title": "instruction"}
    with pytest.raises(BenchError, match=rf"node {loop} \(TTOLoop\) is titled 'instruction'"):
        instruction_slots(template, "mine.json")
    analyze = next(k for k, v in template.items() if v["class_type"] == "TeacherAnalyze")
    template[loop]["_meta"] = {}
    template[analyze]["_meta"] = {"title": "instruction"}   # its instruction is wired: the source is meant
    with pytest.raises(BenchError, match="title that node instead"):
        instruction_slots(template)


def test_an_unwired_teacher_instruction_gets_the_prompt(task):
    template = load_template(TEMPLATE_DIR / "tto_tiny.json")
    primitive = next(k for k, v in template.items() if v["class_type"] == "PrimitiveStringMultiline")
    analyze = next(k for k, v in template.items() if v["class_type"] == "TeacherAnalyze")
    del template[primitive]
    template[analyze]["inputs"]["instruction"] = "typed in"
    prompt, applied = fill_template(template, task, "x.png", {}, "p")
    assert prompt[analyze]["inputs"]["instruction"] == PROMPT and "prompt" in applied


def test_settings_are_applied_by_their_node_input_names(task):
    args = build_parser().parse_args(["--tasks", "t", "--method", "tto", "--out", "o", "--lr", "0.5"])
    assert args.learning_rate == 0.5
    args = build_parser().parse_args(["--tasks", "t", "--method", "tto", "--out", "o", "--learning-rate", "0.25"])
    assert args.learning_rate == 0.25
    template = load_template(TEMPLATE_DIR / "tto_tiny.json")
    settings = {"learning_rate": 0.25, "max_iterations": 3, "loss_threshold": 0.1, "frames": 4, "length": 13}
    prompt, applied = fill_template(template, task, "x.png", settings, "p")
    loop = by_class(prompt)["TTOLoop"][0]
    assert (loop["learning_rate"], loop["max_iterations"], loop["loss_threshold"], loop["frames"]) == (0.25, 3, 0.1, 4)
    assert by_class(prompt)["Wan22ImageToVideoLatent"][0]["length"] == 13
    assert set(settings) <= applied
    assert config_hash(template, settings, "template") != config_hash(template, dict(settings, frames=5), "template")
    toy, applied = fill_template(load_template(TEMPLATE_DIR / "tto_toy.json"), task, "x.png", settings, "p")
    assert by_class(toy)["TAEHVImageToVideoLatent"][0]["length"] == 13 and set(settings) <= applied


def test_the_toy_templates_fit_the_toy_world_and_its_models_folder():
    """128x128, 17 frames at the world's frame rate, the TAEHV encoding the first frame and decoding every
    video, and file names from the toy models folder's layout."""
    from tto_models.toy import world
    from tto_runner.toy_models import TOY_LAYOUT

    files = {Path(rel).name for rel in TOY_LAYOUT.values()}
    for method in METHODS:
        template = load_template(TEMPLATE_DIR / f"{method}_toy.json")
        nodes = by_class(template)
        assert "Wan22ImageToVideoLatent" not in nodes
        (latent,) = nodes["TAEHVImageToVideoLatent"]
        assert (latent["width"], latent["height"], latent["length"]) == (world.SIZE, world.SIZE, world.FRAMES)
        (taehv,) = [k for k, v in template.items() if v["class_type"] == "VAELoader"]
        assert latent["vae"] == [taehv, 0] and all(n["vae"] == [taehv, 0] for n in nodes["VAEDecode"])
        assert [n["fps"] for n in nodes["CreateVideo"]] == [world.FPS]
        named = {v for node in template.values() for k, v in node["inputs"].items()
                 if k in ("unet_name", "vae_name", "model_name", "file")}
        assert named <= files and "toy_taew2_2.safetensors" in named
        for cls, decoder in (("TTOLoop", "loop_decoder"), ("BestOfNSample", "decoder")):
            for node in nodes.get(cls, []):
                assert node["video_fps"] == world.FPS and node[decoder] == [taehv, 0]


def test_a_setting_no_node_takes_is_refused(task, tmp_path, capsys):
    tasks = task.dir.parents[2]
    assert main(["--tasks", str(tasks), "--method", "tto", "--n", "3", "--out", str(tmp_path)]) == 2
    assert "--n: no node in tto_tiny.json takes it" in capsys.readouterr().err
    assert main(["--tasks", str(tasks), "--method", "baseline", "--lr", "0.1", "--max-iterations", "2",
                 "--out", str(tmp_path)]) == 2
    assert "--max-iterations, --learning-rate: no node in baseline_tiny.json takes them" in capsys.readouterr().err
    assert main(["--tasks", str(tasks), "--method", "tto", "--max-attempts", "0", "--out", str(tmp_path)]) == 2
    assert "--max-attempts must be at least 1" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- records


LOOP_REPORT = {"iterations": 3, "stop_reason": "threshold", "first_loss": 0.9, "final_loss": 0.2,
               "queries": [{"question": "Does the ball reach the square?", "kind": "goal", "first_score": 0.3,
                            "final_score": 0.8}],
               "cost": {"reasoner_forward": 7, "teacher_forward": 3, "wall_s": 1.5, "equal_wall_samples": 4}}
ANALYZE_REPORT = {"source": "teacher", "cost": {"teacher_generate": 1, "wall_s": 0.25}}
BEST_REPORT = {"best_seed": 1, "best_loss": 0.4, "cost": {"reasoner_forward": 8, "samples": 2, "wall_s": 2.0},
               "samples": [{"seed": 0, "loss": 0.6, "score": 0.5, "query_scores": [0.5, 0.4]},
                           {"seed": 1, "loss": 0.4, "score": 0.7, "query_scores": [0.8, 0.6]}]}


def history_of(reports: dict) -> dict:
    """A history entry whose nodes' ui texts are these reports (node id = class name)."""
    return {"outputs": {cls: {"text": [json.dumps(r) if isinstance(r, dict) else r]} for cls, r in reports.items()}}


def test_a_tto_record_from_the_node_reports(task):
    prompt = {cls: {"class_type": cls, "inputs": {}} for cls in ("TeacherAnalyze", "TTOLoop", "SaveVideo")}
    history = history_of({"TeacherAnalyze": ANALYZE_REPORT, "TTOLoop": LOOP_REPORT, "SaveVideo": {"ignored": 1}})
    reports = read_reports(prompt, history)
    assert set(reports) == {"TeacherAnalyze", "TTOLoop"}
    record = base_record(task, "tto", "done", "cfg")
    summarise_reports(record, reports, prompt)
    assert (record["iterations"], record["stop_reason"]) == (3, "threshold")
    assert (record["first_loss"], record["final_loss"]) == (0.9, 0.2)
    assert record["scores"] == [{"question": "Does the ball reach the square?", "kind": "goal", "score": 0.8,
                                 "first_score": 0.3}]
    # Costs add up over the report nodes; a value that is not a number keeps the first one seen.
    assert record["cost"] == {"teacher_generate": 1, "wall_s": 1.75, "reasoner_forward": 7, "teacher_forward": 3,
                              "equal_wall_samples": 4}


def test_best_of_n_and_solver_records_and_an_unparsable_report(task):
    prompt = {cls: {"class_type": cls, "inputs": {}} for cls in ("BestOfNSample", "TeacherRewritePrompt")}
    history = history_of({"BestOfNSample": BEST_REPORT, "TeacherRewritePrompt": "not json"})
    reports = read_reports(prompt, history)
    assert reports["TeacherRewritePrompt"] == {"unparsed": "not json"}
    record = base_record(task, "best_of_n", "done", "cfg")
    summarise_reports(record, reports, prompt)
    assert record["best_seed"] == 1 and record["final_loss"] == 0.4
    assert record["candidates"] == [{"seed": 0, "loss": 0.6, "score": 0.5}, {"seed": 1, "loss": 0.4, "score": 0.7}]
    assert record["scores"] == [{"query": 0, "score": 0.8}, {"query": 1, "score": 0.6}]
    assert record["rewritten_prompt"] is None and record["cost"]["samples"] == 2
    solver = {"TeacherRewritePrompt": {"class_type": "TeacherRewritePrompt", "inputs": {}}}
    record = base_record(task, "solver", "done", "cfg")
    summarise_reports(record, read_reports(solver, history_of({"TeacherRewritePrompt": {"prompt": "new"}})), solver)
    assert record["rewritten_prompt"] == "new" and record["cost"] is None  # no report cost and no sampler


def test_the_baseline_cost_is_counted_from_its_sampler(task):
    template = load_template(TEMPLATE_DIR / "baseline_tiny.json")
    prompt, _ = fill_template(template, task, "x.png", {"steps": 6, "cfg": 1.0}, "p")
    assert sampler_cost(prompt)["reasoner_forward"] == 6
    prompt, _ = fill_template(template, task, "x.png", {"steps": 6, "cfg": 5.0}, "p")  # cond + uncond per step
    cost = sampler_cost(prompt)
    assert cost["reasoner_forward"] == 12 and cost["teacher_forward"] == 0
    assert cost["counted_from"] == "sampler settings"
    record = base_record(task, "baseline", "done", "cfg")
    summarise_reports(record, {}, prompt)
    assert record["cost"] == cost
    assert sampler_cost(load_template(TEMPLATE_DIR / "tto_tiny.json")) is None


def test_what_counts_as_done_when_resuming(task, tmp_path):
    out = tmp_path / "out" / "tto"
    video = out / f"{task.id}.mp4"
    done = dict(base_record(task, "tto", "done", "abc"), video=f"{task.id}.mp4")
    assert not counts_as_done(done, "abc", video)            # the video is gone
    video.parent.mkdir(parents=True)
    video.write_bytes(b"mp4")
    assert counts_as_done(done, "abc", video)
    assert not counts_as_done(done, "other settings", video)
    assert not counts_as_done(dict(done, status="failed"), "abc", video)
    assert not counts_as_done(None, "abc", video)

    summary = Summary(out / "summary.json", {"method": "tto"})
    summary.put(done)
    summary.put(base_record(Task(id="b/1", dir=tmp_path), "tto", "failed", "abc"))
    again = Summary(out / "summary.json", {"method": "tto"})   # a re-run reads the records back
    assert again.is_done(task, "abc", out) and not again.is_done(Task(id="b/1", dir=tmp_path), "abc", out)
    body = json.loads((out / "summary.json").read_text())
    assert body["counts"] == {"done": 1, "failed": 1} and [r["task"] for r in body["tasks"]] == ["b/1", task.id]
    (out / "summary.json").write_text("[1, 2]")                # not a summary: nothing counts as done
    assert not Summary(out / "summary.json", {}).is_done(task, "abc", out)


def tto_summary(folder: Path, walls: list, config: str = "abc") -> Path:
    summary = Summary(folder / "summary.json", {"method": "tto", "config": config})
    for i, n in enumerate(walls):
        record = dict(base_record(Task(id=f"s/{i}", dir=folder), "tto", "done", config), seconds=2.0 + i,
                      cost={"wall_s": 1.0 + i, "equal_wall_samples": n})
        summary.put(record)
    summary.write()
    return summary.path


def test_best_of_n_takes_n_from_a_finished_tto_run(task, tmp_path, capsys):
    runs = tmp_path / "runs"
    path = tto_summary(runs / "tto", [4, 7, 8])
    summary = Summary(path, {"method": "tto", "config": "abc"})
    summary.put(base_record(Task(id="s/failed", dir=tmp_path), "tto", "failed", "abc"))
    summary.put(dict(base_record(Task(id="s/old", dir=tmp_path), "tto", "done", "older settings"),
                     cost={"equal_wall_samples": 100}))
    means = run_means(summary.records.values(), "abc")   # the failed task and the other experiment do not count
    assert means == {"tasks": 3, "seconds": 3.0, "wall_s": 2.0, "equal_wall_samples": 19 / 3}
    assert equal_wall_n(runs / "tto") == (6, means) and equal_wall_n(path)[0] == 6
    assert run_means([])["equal_wall_samples"] is None

    tasks = task.dir.parents[2]
    out = tmp_path / "bon"
    nowhere = ["--server", "http://127.0.0.1:9"]   # plans, writes the summary header, then finds no server
    assert main(["--tasks", str(tasks), "--method", "best_of_n", "--out", str(out), "--n-from", str(runs / "tto"),
                 *nowhere]) == 2
    err = capsys.readouterr().err
    assert "--n 6: the mean equal_wall_samples (6.333) of 3 done tasks" in err and "no usable server" in err
    header = json.loads((out / "best_of_n" / "summary.json").read_text())
    assert header["settings"]["n"] == 6 and header["n_from"]["equal_wall_samples"] == 6.333
    assert main(["--tasks", str(tasks), "--method", "best_of_n", "--out", str(out), "--n", "3", "--n-from",
                 str(runs / "tto")]) == 2
    assert "--n and --n-from both set N" in capsys.readouterr().err
    assert equal_wall_n(runs)[0] == 6   # <out> itself: its tto run
    assert main(["--tasks", str(tasks), "--method", "best_of_n", "--out", str(out), "--n-from",
                 str(out / "best_of_n")]) == 2
    assert "is not the summary of a tto run (its method is 'best_of_n')" in capsys.readouterr().err
    assert main(["--tasks", str(tasks), "--method", "best_of_n", "--out", str(out), "--n-from",
                 str(tmp_path / "nothing")]) == 2
    assert "no readable tto-bench summary" in capsys.readouterr().err
    tto_summary(runs / "tto_without_cost", [])
    assert main(["--tasks", str(tasks), "--method", "best_of_n", "--out", str(out), "--n-from",
                 str(runs / "tto_without_cost")]) == 2
    assert "no done task" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- scheduling


def test_connection_errors_are_the_servers_and_local_io_errors_are_not(tmp_path):
    client = ComfyClient("http://127.0.0.1:9", timeout=2)   # nothing listens on the discard port
    with pytest.raises(ServerConnectionError) as refused:
        client.wait("no-such-prompt", timeout=1)
    with pytest.raises(requests.ConnectionError) as http_refused:
        client.queue({})
    for error in (refused.value, http_refused.value, websocket.WebSocketConnectionClosedException("closed"),
                  TimeoutError("prompt not finished after 1 s"), ConnectionResetError("reset")):
        assert is_server_error(error), error
    blocked = tmp_path / "out" / "tto"
    blocked.parent.mkdir()
    blocked.write_text("a file where the method's folder should be")
    with pytest.raises(LocalIOError) as unwritable:
        save_video(b"mp4", blocked / "split" / "00000.mp4")
    for error in (unwritable.value, PermissionError(13, "Permission denied"), OSError(28, "No space left on device")):
        assert not is_server_error(error), error
    assert "local" in describe_error(unwritable.value) and "not the server's" in describe_error(OSError(28, "full"))
    assert describe_error(refused.value).startswith("server error: ServerConnectionError")


def test_save_video_replaces_the_file_whole(tmp_path):
    dest = tmp_path / "a" / "b.mp4"
    save_video(b"first", dest)
    save_video(b"second", dest)
    assert dest.read_bytes() == b"second" and [p.name for p in dest.parent.iterdir()] == ["b.mp4"]


def test_the_queue_moves_a_task_away_from_the_server_it_failed_on(tmp_path):
    tasks = [Task(id="a", dir=tmp_path), Task(id="b", dir=tmp_path)]
    work = TaskQueue(tasks)
    work.add_worker("s1")
    work.add_worker("s2")
    first = work.get("s1")
    first.avoid.add("s1")
    work.retry(first)
    assert work.get("s1") is tasks[1]          # s1 skips the task that failed on it
    assert work.get("s2") is first
    work.finish(first)
    work.drop_worker("s2")
    work.retry(tasks[1])
    tasks[1].avoid.update({"s1"})
    assert work.get("s1") is tasks[1]          # no other live server: s1 takes it anyway
    work.finish(tasks[1])
    assert work.get("s1") is None              # nothing pending or in flight
    assert TaskQueue(tasks).get("s3") is None  # not a live worker


# ------------------------------------------------------------------------------------------- servers


def fake_host(tmp_path) -> Path:
    host = tmp_path / "comfyui"
    host.mkdir()
    (host / "main.py").write_text("")
    return host


@pytest.mark.parametrize("models,device,cpu", [("tiny", None, True), ("wan22", None, False), ("wan22", "cpu", True),
                                               ("tiny", "gpu", False)])
def test_the_local_server_device_defaults_by_model_set(tmp_path, models, device, cpu):
    argv = ["--tasks", "t", "--method", "tto", "--out", "o", "--models", models, "--models-dir", str(tmp_path),
            "--comfyui", str(fake_host(tmp_path))] + (["--local-device", device] if device else [])
    server = local_server(build_parser().parse_args(argv), tmp_path / "base")
    assert ("--cpu" in server.command()) == cpu


def test_the_local_wan22_server_needs_a_models_folder(tmp_path):
    args = build_parser().parse_args(["--tasks", "t", "--method", "tto", "--out", "o", "--models", "wan22"])
    with pytest.raises(BenchError, match="--models-dir"):
        local_server(args, tmp_path)


def write_toy_layout(folder: Path, manifest: bool = True) -> Path:
    """Files named like the toy models (not models: nothing loads them here)."""
    for rel in TOY_LAYOUT.values():
        path = folder / rel / "config.json" if rel.startswith("LLM/") else folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    if manifest:
        (folder / "toy_models_manifest.json").write_text("{}")
    return folder


def test_the_local_toy_server_checks_the_models_folder(tmp_path):
    argv = ["--tasks", "t", "--method", "tto", "--out", "o", "--models", "toy", "--comfyui", str(fake_host(tmp_path))]
    models = tmp_path / "toy"
    (models / "vae").mkdir(parents=True)
    with pytest.raises(BenchError, match="lacks the toy models diffusion_models/toy_wan22_reasoner.safetensors, "
                                         "vae/toy_taew2_2.safetensors, LLM/toy-qwen3-vl, "
                                         "conditioning/toy_prompt.safetensors; train them with"):
        local_server(build_parser().parse_args(argv + ["--models-dir", str(models)]), tmp_path / "base")
    write_toy_layout(models, manifest=False)   # a folder the user names needs no manifest
    server = local_server(build_parser().parse_args(argv + ["--models-dir", str(models)]), tmp_path / "base")
    assert server.models_dir == models and "--cpu" in server.command()


TRAIN_FAKE = """import json, pathlib, sys
out = pathlib.Path(sys.argv[sys.argv.index("--out") + 1])
print("training into", out.name, flush=True)
for rel in json.loads(sys.argv[1]):
    path = out / rel / "config.json" if rel.startswith("LLM/") else out / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")
(out / "toy_models_manifest.json").write_text("{}")
"""


def test_toy_models_are_built_once_by_the_training_command_and_a_failure_names_it(tmp_path, monkeypatch):
    import tto_runner.toy_models

    monkeypatch.setattr(tto_runner.toy_models, "SHIPPED", tmp_path / "not-shipped")
    monkeypatch.setenv("TTO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert toy_models_cache() == tmp_path / "home" / "toy-models" and available_toy_models() is None
    assert train_command(Path("x"))[1:] == ["-m", "tto_models.toy", "train", "--out", "x"]
    lines = []
    fail = [sys.executable, "-c", "import sys; print('no such command: train'); sys.exit(2)"]
    with pytest.raises(ToyModelsError, match=r"with `python -c .*` failed \(exit 2; last lines: no such command"):
        ensure_toy_models(command=fail, log=lines.append)
    assert not toy_models_cache().exists() and "  no such command: train" in lines

    partial = tmp_path / "home" / "toy-models.partial"
    fake = [sys.executable, "-c", TRAIN_FAKE, json.dumps(list(TOY_LAYOUT.values())), "--out", str(partial)]
    assert ensure_toy_models(command=fake, log=lines.append) == toy_models_cache()
    assert "  training into toy-models.partial" in lines and not partial.exists()
    assert available_toy_models() == toy_models_cache()
    lines.clear()
    assert ensure_toy_models(command=fail, log=lines.append) == toy_models_cache() and lines == []   # cached

    monkeypatch.setenv(ENV_VAR, str(write_toy_layout(tmp_path / "elsewhere", manifest=False)))
    assert available_toy_models() == tmp_path / "elsewhere"
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "empty"))
    assert available_toy_models() is None


class _Stats(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        self.send_response(self.status if self.path == "/system_stats" else 404)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("status,answers", [(200, True), (500, False)])
def test_the_health_check(status, answers):
    handler = type("Handler", (_Stats,), {"status": status})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        assert server_answers(f"http://127.0.0.1:{httpd.server_port}/", tries=2, pause=0.01) is answers
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert server_answers("http://127.0.0.1:9", tries=2, timeout=1, pause=0.01) is False


def test_the_cache_root_follows_tto_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TTO_HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" and models_cache() == tmp_path / "home" / "tiny-models"
    monkeypatch.delenv("TTO_HOME")
    assert cache_root() == Path.home() / ".cache" / "comfy-vlm-teacher"


def test_the_console_script_and_its_packages_are_declared():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    module, _, name = project["project"]["scripts"]["tto-bench"].partition(":")
    assert getattr(importlib.import_module(module), name) is main
    packages = {p.parent.relative_to(REPO_ROOT).as_posix().replace("/", ".")
                for root in ("tto_engine", "tto_runner") for p in (REPO_ROOT / root).rglob("__init__.py")}
    assert packages <= set(project["tool"]["setuptools"]["packages"])


def test_the_toy_models_shipped_with_the_pack_are_used_before_any_cache_or_training(tmp_path, monkeypatch):
    import tto_runner.toy_models

    shipped = write_toy_layout(tmp_path / "shipped")
    monkeypatch.setattr(tto_runner.toy_models, "SHIPPED", shipped)
    monkeypatch.setenv("TTO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(ENV_VAR, raising=False)
    fail = [sys.executable, "-c", "import sys; sys.exit(2)"]
    assert ensure_toy_models(command=fail) == shipped and available_toy_models() == shipped
    (shipped / TOY_LAYOUT["teacher"] / "config.json").unlink()     # incomplete: the cache or training instead
    assert available_toy_models() is None
    with pytest.raises(ToyModelsError):
        ensure_toy_models(command=fail, log=lambda line: None)
