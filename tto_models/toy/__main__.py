"""Command line of the toy world: `python -m tto_models.toy <command> ...`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _generate(args) -> int:
    from . import files, world

    paths = files.write_instances(args.out, args.n, args.seed, args.split, args.start)
    print(f"wrote {len(paths)} instances under {Path(args.out) / args.split / world.TASK_NAME}")
    return 0


def _score(args) -> int:
    from . import files

    summary = files.score_folder(args.videos, args.tasks)
    out = Path(args.json) if args.json else Path(args.videos) / "toy_scores.json"
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(files.format_summary(summary))
    print(f"per-task verdicts: {out}")
    return 0


def _train_autoencoder(args) -> int:
    import torch

    from . import code_autoencoder as CA
    from .taehv import load, save

    torch.set_num_threads(args.threads)
    model = load(args.resume) if args.resume else CA.new_model(args.seed)
    pool = None
    if args.reasoner:
        from . import reasoner as R

        tick = time.time()
        pool = CA.reasoner_scenes(R.load(args.reasoner), args.reasoner_scenes, seed=args.seed)
        print(f"{len(pool)} reasoner scenes ({time.time() - tick:.0f} s)", flush=True)
    if args.decoder_steps:
        CA.train_decoder(model, CA.Schedule(args.decoder_steps, args.batch, args.decoder_lr), seed=args.seed,
                         start_index=args.start_index, pool=pool, pool_share=args.reasoner_share,
                         area_weight=CA.AREA_WEIGHT if args.area_weight is None else args.area_weight)
    if args.encoder_steps:
        CA.train_encoder(model, CA.Schedule(args.encoder_steps, 16, args.encoder_lr), seed=args.seed)
    save(model, args.out)
    print(f"wrote {args.out}")
    if args.judge:
        print("decoder:", json.dumps(CA.judge_decoder(model, args.judge)))
        print("encoder:", json.dumps(CA.judge_encoder(model, args.judge)))
    return 0


def _train_reasoner(args) -> int:
    import torch

    from . import reasoner as R
    from .taehv import load as load_taehv

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    schedule = R.Schedule(args.steps, args.batch, args.lr, args.still_weight)
    patcher = R.load(args.resume) if args.resume else R.new(out, seed=args.seed)
    decoder = load_taehv(args.autoencoder) if args.autoencoder else None

    def checkpoint(step: int) -> None:
        path = out.with_name(f"{out.stem}.step{step}{out.suffix}")
        R.save(patcher, path)
        report = R.evaluate(patcher, args.eval, decoder=decoder) if args.eval else {}
        print(f"step {step}: wrote {path}", json.dumps(report), flush=True)

    R.train(patcher, schedule, seed=args.seed, checkpoint=checkpoint,
            checkpoint_every=args.checkpoint_every, encoder=decoder if args.encoded_first_frames else None,
            start_index=args.start_index)
    R.save(patcher, out)
    report = R.evaluate(patcher, args.eval, decoder=decoder) if args.eval else {}
    print(f"wrote {out}", json.dumps(report))
    return 0


def _train_teacher(args) -> int:
    import torch

    from . import reasoner as R
    from . import teacher as T
    from .taehv import load as load_taehv

    if args.resume and (args.vision_width or args.text_layers):
        raise ValueError("--vision-width and --text-layers size a fresh teacher; --resume keeps its teacher's sizes.")
    torch.set_num_threads(args.threads)
    decoder = load_taehv(args.autoencoder) if args.autoencoder else None
    reasoner = R.load(args.reasoner) if args.reasoner else None
    shares = tuple(float(v) for v in args.shares.split(","))
    tick = time.time()
    train = T.make_examples(T.TEACHER_SEED, args.n, decoder, reasoner, shares)
    held_out = T.make_examples(T.CHECK_SEED, args.eval, decoder, reasoner, shares) if args.eval else []
    if args.loop_instances or args.checker_loop_instances:
        from .probe import Pack

        loop_teacher = args.loop_teacher or args.resume
        if not (loop_teacher and decoder is not None and reasoner is not None):
            raise ValueError("--loop-instances and --checker-loop-instances need --resume or --loop-teacher (the "
                             "teacher the loop runs with), --autoencoder and --reasoner.")
        pack = Pack(args.reasoner, args.autoencoder, loop_teacher)
        start = T.LOOP_INDEX if args.loop_start is None else args.loop_start
        loop = T.loop_examples(pack, args.loop_instances, start=start)
        loop += T.loop_examples(pack, args.checker_loop_instances, checker=True, start=start + args.loop_instances)
        del pack
        train += loop * args.loop_repeat
    print(f"{len(train)} training clips, {len(held_out)} held out ({time.time() - tick:.0f} s)",
          flush=True)
    teacher = T.load(args.resume) if args.resume else T.build(args.out, seed=args.seed, vision_width=args.vision_width,
                                                              text_layers=args.text_layers)
    if args.vision_steps:
        T.pretrain_vision(teacher, train, args.vision_steps, args.batch, seed=args.seed)
    T.train(teacher, train, args.steps, args.batch, args.lr, seed=args.seed, softness=args.soft_labels)
    T.save(teacher, args.out, origin=args.resume or args.out)
    print(f"wrote {args.out}")
    if held_out:
        print("held-out accuracy:", json.dumps(T.evaluate(teacher, held_out)))
    return 0


def _train_all(args) -> int:
    """Every toy model from scratch, in order, each stage's command line as above; then the models folder."""
    from .models_folder import write_models_folder

    out = Path(args.out)
    work = out / "training"
    work.mkdir(parents=True, exist_ok=True)
    threads = ["--threads", str(args.threads)]
    taehv, reasoner, teacher = work / "taehv.safetensors", work / "reasoner.safetensors", work / "teacher"
    stages = {
        "autoencoder": ["train-autoencoder", "--out", str(taehv), "--decoder-steps", str(args.decoder_steps),
                        "--encoder-steps", str(args.encoder_steps), "--area-weight", "0", "--judge", "0"],
        "reasoner": ["train-reasoner", "--out", str(reasoner), "--steps", str(args.reasoner_steps), "--eval", "0"],
        "decoder_on_reasoner": ["train-autoencoder", "--resume", str(taehv), "--out", str(taehv),
                                "--decoder-steps", str(args.finetune_steps), "--decoder-lr", "3e-4",
                                "--encoder-steps", "0", "--reasoner", str(reasoner), "--judge", "0"],
        "teacher": ["train-teacher", "--out", str(teacher), "--autoencoder", str(taehv), "--reasoner", str(reasoner),
                    "--n", str(args.teacher_clips), "--steps", str(args.teacher_steps), "--eval", "0"],
    }
    seconds = {}
    for name, argv in stages.items():
        print(f"== {name}: python -m tto_models.toy {' '.join(argv + threads)}", flush=True)
        tick = time.time()
        code = main(argv + threads)
        seconds[name] = round(time.time() - tick)
        if code:
            return code
        print(f"== {name}: {seconds[name]} s", flush=True)
    recipe = {"stages": {k: " ".join(v + threads).replace(str(out), "OUT") for k, v in stages.items()},
              "seconds": seconds, "threads": args.threads}
    write_models_folder(out, reasoner, taehv, teacher, recipe)
    import shutil

    shutil.rmtree(work)   # the stages' own files: the folder now holds copies
    print(f"wrote the toy models folder {out} in {sum(seconds.values())} s", flush=True)
    return 0


def _probe_loop(args) -> int:
    from . import probe, world

    pack = probe.Pack(args.reasoner, args.autoencoder, args.teacher)
    rows = probe.run(pack, [world.generate_instance(args.stream, i) for i in range(args.start, args.start + args.n)],
                     max_iterations=args.max_iterations, learning_rate=args.lr, loss_threshold=args.threshold,
                     gradient_mode=args.gradient_mode, checker=args.checker,
                     log=lambda row: print(row, flush=True))
    base = sum(not r["baseline"] for r in rows)
    tto = sum(not r["tto"] for r in rows)
    print(f"baseline {base}/{len(rows)}, tto {tto}/{len(rows)}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


def _probe_best_of(args) -> int:
    from . import probe, world

    pack = probe.Pack(args.reasoner, args.autoencoder)
    rows = probe.best_of_checker(pack, [world.generate_instance(args.stream, i)
                                        for i in range(args.start, args.start + args.n)], args.candidates,
                                 log=lambda row: print(row, flush=True))
    print(f"best of {args.candidates} with the checker selecting: {sum(r['passing'] > 0 for r in rows)}/{len(rows)}; "
          f"one sample: {sum(r['passing'] for r in rows) / (args.candidates * len(rows)):.3f} pass on average")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tto_models.toy", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write N instances in the VBVR layout")
    g.add_argument("--out", required=True, help="tasks folder; instances go to <out>/<split>/"
                                                "ball_to_target_data-generator/NNNNN/")
    g.add_argument("--n", type=int, required=True, help="number of instances")
    g.add_argument("--seed", type=int, default=0, help="stream seed; instance i depends only on (seed, i)")
    g.add_argument("--split", default="toy", help="split folder name")
    g.add_argument("--start", type=int, default=0, help="index of the first instance")
    g.set_defaults(run=_generate)

    s = sub.add_parser("score", help="score videos laid out like tto-bench's output against a tasks folder")
    s.add_argument("--videos", required=True, help="<out>/<method> of tto-bench: holds <split>/"
                                                   "ball_to_target_data-generator/NNNNN.mp4")
    s.add_argument("--tasks", required=True, help="the tasks folder the videos were made from")
    s.add_argument("--json", help="where to write the per-task verdicts (default <videos>/toy_scores.json)")
    s.set_defaults(run=_score)

    a = sub.add_parser("train-autoencoder", help="train the 48-channel TAEHV for the designed latent code")
    a.add_argument("--out", required=True, help="where to write the TAEHV (float16 safetensors, host layout)")
    a.add_argument("--resume", help="start from this TAEHV file instead of a fresh one")
    a.add_argument("--decoder-steps", type=int, default=1000)
    a.add_argument("--decoder-lr", type=float, default=1e-3)
    a.add_argument("--batch", type=int, default=8, help="decoder crops per step")
    a.add_argument("--area-weight", type=float, default=None,
                   help="weight of the per-frame ball-area term (default code_autoencoder.AREA_WEIGHT); 0 for a "
                        "decoder trained from scratch, which otherwise never learns the ball's colour")
    a.add_argument("--reasoner", help="a trained toy reasoner: the decoder also learns its codes' scenes")
    a.add_argument("--reasoner-scenes", type=int, default=400, help="reasoner codes to draw from")
    a.add_argument("--reasoner-share", type=float, default=0.5, help="share of each batch from reasoner codes")
    a.add_argument("--encoder-steps", type=int, default=600)
    a.add_argument("--encoder-lr", type=float, default=1e-3)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--start-index", type=int, default=0, help="first training scene of the decoder (to continue on "
                                                              "fresh ones)")
    a.add_argument("--threads", type=int, default=2)
    a.add_argument("--judge", type=int, default=100, help="held-out instances to judge it on (0: none)")
    a.set_defaults(run=_train_autoencoder)

    r = sub.add_parser("train-reasoner", help="train the tiny Wan 2.2 TI2V-5B-layout reasoner on the designed code")
    r.add_argument("--out", required=True, help="where to write it (safetensors, loads in stock UNETLoader); "
                                                "checkpoints go beside it as <name>.stepN.safetensors")
    r.add_argument("--resume", help="continue training this reasoner file")
    r.add_argument("--steps", type=int, default=400, help="training steps (0 with --resume: only judge that reasoner)")
    r.add_argument("--batch", type=int, default=16)
    r.add_argument("--lr", type=float, default=1e-3)
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--still-weight", type=float, default=1.0,
                   help="loss weight of the still channels (target, marks, ink) against the ball's")
    r.add_argument("--checkpoint-every", type=int, default=0)
    r.add_argument("--eval", type=int, default=100, help="held-out instances sampled at each checkpoint (0: none)")
    r.add_argument("--autoencoder", help="a trained toy TAEHV: also judge the decoded videos")
    r.add_argument("--encoded-first-frames", action="store_true",
                   help="frame 0 as the --autoencoder's encoder writes it (what the pack's node feeds the reasoner)")
    r.add_argument("--start-index", type=int, default=0, help="first training instance (to continue on fresh ones)")
    r.add_argument("--threads", type=int, default=1)
    r.set_defaults(run=_train_reasoner)

    t = sub.add_parser("train-teacher", help="train the tiny Qwen3-VL teacher on clips labelled by the checker")
    t.add_argument("--out", required=True, help="checkpoint folder to write (from_pretrained layout)")
    t.add_argument("--resume", help="continue training this teacher folder")
    t.add_argument("--autoencoder", help="toy TAEHV: adds decoded clips")
    t.add_argument("--reasoner", help="toy reasoner: adds its samples and one-step predictions, decoded")
    t.add_argument("--shares", default="0.2,0.2,0.2,0.2,0.2", help="shares of drawn,decoded,sample,one_step,moved clips")
    t.add_argument("--n", type=int, default=1200, help="training clips")
    t.add_argument("--loop-instances", type=int, default=0,
                   help="also the clips the loop shows its teacher (--loop-teacher, else --resume) on this many "
                        "training instances")
    t.add_argument("--loop-teacher", help="the teacher the loop runs with for --loop-instances (default: --resume)")
    t.add_argument("--checker-loop-instances", type=int, default=0,
                   help="also the clips the loop shows when the checker is its teacher, on this many instances")
    t.add_argument("--loop-start", type=int, default=None,
                   help="first instance of the loops' clips (default: teacher.LOOP_INDEX of stream 300); later "
                        "rounds take fresh ones")
    t.add_argument("--soft-labels", type=float, default=0.0,
                   help="px: learn P(Yes) as a sigmoid of how clearly each rule holds, over this scale (0: hard labels)")
    t.add_argument("--loop-repeat", type=int, default=2, help="how many times each loop clip enters the training set")
    t.add_argument("--vision-width", type=int, help="a fresh teacher's vision tower width, a multiple of 32 "
                                                     "(default: the tiny Qwen3-VL's)")
    t.add_argument("--text-layers", type=int, help="a fresh teacher's language-model layers (default: the tiny Qwen3-VL's)")
    t.add_argument("--vision-steps", type=int, default=300, help="dense per-token pre-training of the vision tower")
    t.add_argument("--steps", type=int, default=600)
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--eval", type=int, default=200, help="held-out clips for the accuracy table (0: none)")
    t.add_argument("--threads", type=int, default=1)
    t.set_defaults(run=_train_teacher)

    w = sub.add_parser("train", help="train every toy model from scratch and lay them out in a ComfyUI models folder")
    w.add_argument("--out", required=True, help="models folder to write (diffusion_models/, vae/, LLM/, conditioning/)")
    w.add_argument("--decoder-steps", type=int, default=1000)
    w.add_argument("--encoder-steps", type=int, default=500)
    w.add_argument("--reasoner-steps", type=int, default=300)
    w.add_argument("--finetune-steps", type=int, default=300, help="decoder steps on the reasoner's own codes")
    w.add_argument("--teacher-clips", type=int, default=1200)
    w.add_argument("--teacher-steps", type=int, default=600)
    w.add_argument("--threads", type=int, default=2)
    w.set_defaults(run=_train_all)

    q = sub.add_parser("probe-loop", help="baseline and TTO through the pack's nodes in process, checker verdicts")
    q.add_argument("--reasoner", required=True)
    q.add_argument("--autoencoder", required=True)
    q.add_argument("--teacher", required=True)
    q.add_argument("--stream", type=int, default=1000, help="instance stream")
    q.add_argument("--start", type=int, default=0)
    q.add_argument("--n", type=int, default=10)
    q.add_argument("--max-iterations", type=int, default=10)
    q.add_argument("--lr", type=float, default=1e-3)
    q.add_argument("--threshold", type=float, default=0.22)
    q.add_argument("--gradient-mode", default="first", choices=("first", "last", "all"))
    q.add_argument("--checker", action="store_true",
                   help="the loop's teacher is the checker itself (knows the true positions): the loop's ceiling")
    q.add_argument("--json", help="write the per-instance rows here")
    q.set_defaults(run=_probe_loop)

    b = sub.add_parser("probe-best-of", help="how many of N stock samples per instance the checker passes (in process): "
                                             "Best-of-N's ceiling, a selector that is never wrong")
    for name in ("--reasoner", "--autoencoder"):
        b.add_argument(name, required=True)
    b.add_argument("--stream", type=int, default=1000, help="instance stream")
    b.add_argument("--start", type=int, default=0)
    b.add_argument("--n", type=int, default=10)
    b.add_argument("--candidates", type=int, default=26, help="samples per instance (seeds 0..N-1)")
    b.add_argument("--json", help="write the per-instance rows here")
    b.set_defaults(run=_probe_best_of)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
