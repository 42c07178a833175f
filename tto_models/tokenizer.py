"""The tiny teachers' tokenizer: a byte-level BPE trained locally on a small corpus written for this project.

Qwen's special tokens follow the learned vocabulary (as in Qwen's own vocabularies), "Yes" and "No" are
single tokens, and the chat template follows Qwen's chat format. Deterministic: no seed is involved.
"""

from __future__ import annotations

import json

#: Qwen's special tokens, in the order Qwen's own vocabularies hold them.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# A minimal chat template in the Qwen chat format, written for this project. Content may be a string
# or a list of items of type "text", "image" or "video".
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'text' -%}"
    "{{- item['text'] -}}"
    "{%- elif item['type'] == 'image' -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'video' -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)

_TOKENIZER_VOCAB_SIZE = 2000


def _corpus() -> list[str]:
    """A small English corpus, written for this project and generated combinatorially (deterministic).

    Questions about videos, balls and mazes, yes/no answers, JSON with "goal"/"process" keys, digits.
    """
    colors = "red green blue yellow orange purple pink brown black white gray grey cyan magenta gold silver".split()
    things = ("ball cube sphere square circle triangle star arrow robot car agent marker dot token piece block "
              "box wall door key coin gem tile cell grid maze path road line bridge ladder platform rope ring "
              "disk bar stick card pawn knight king queen tower boat plane train bird fish cat dog mouse "
              "person hand cup glass bottle plate chair table lamp window mirror clock flag tree flower rock").split()
    places = ("goal target exit entrance corner center edge border start finish end top bottom left right "
              "middle side floor ceiling room corridor hole gap slot box bin cup zone area region area").split()
    verbs = ("move roll slide travel go push pull carry guide bring jump fall rise turn rotate spin bounce "
             "stop start reach touch hit avoid cross enter leave follow chase pass open close fill pour drop "
             "lift place stack sort swap match connect draw trace paint grow shrink split merge vanish appear "
             "change keep stay remain hold release collide break melt freeze flow slip climb").split()
    adjectives = ("small large big tiny huge tall short long wide narrow thin thick heavy light fast slow "
                  "smooth rough round flat straight curved bright dark empty full open closed solid broken "
                  "clean dirty hot cold wet dry same different first last next previous final whole entire "
                  "correct wrong visible hidden intact stable steady sudden gradual physical plausible "
                  "realistic consistent continuous").split()
    adverbs = ("slowly quickly smoothly carefully directly exactly only always never still again finally "
               "already almost completely partly clearly steadily suddenly gradually").split()
    words = ("video frame frames clip scene camera view image picture motion movement position location "
             "direction distance speed velocity time second seconds step steps order sequence rule rules "
             "task instruction question answer teacher student model score reward loss confidence "
             "probability objective process goal query queries supervision reasoning physics gravity "
             "collision shadow light color shape size number count left right above below behind between "
             "inside outside through across along around toward towards without within during before after "
             "until while because therefore however although").split()
    common = ("about above across action actually add after again against age ago agree ahead air all allow "
              "almost alone along already also always among amount angle animal another any anything appear "
              "apply around arrive ask attempt attention away back balance base basic become begin behavior "
              "believe belong beside best better beyond bottom brief build busy button calm cannot careful "
              "carry case cause certain chance check choice choose circle clear climb close common compare "
              "complete contain continue control corner could cover create current curve decide define "
              "describe detail develop difference difficult discover display during each early easy effect "
              "either else enough equal even event every example except expect explain fact fail feature "
              "field figure find follow force form forward free front general give ground group guess happen "
              "happens help here high however idea important include increase indicate initial instead "
              "interest itself judge just keep kind know known large later least less level likely limit "
              "little look lower main make many maybe mean measure might minute mistake moment more most "
              "much must near nearly need neither never nothing notice object obvious often once other "
              "output over own part particular perhaps plan point possible prefer present pretty probably "
              "problem produce provide purpose quite rather ready real reason record reduce region relative "
              "remember repeat report require result return right role round safe sample scale search "
              "select sense separate set several should show side sign simple since single slightly some "
              "something sometimes soon space special specific stage state such suggest support sure "
              "surface system take than that their them then there these thing think this those though "
              "three throughout together too total track true try twice under unit upon usual value very "
              "visible wait want watch way well were what when where whether which while who whose why will "
              "with within word work would yet zero one two four five six seven eight nine ten hundred").split()
    hazards = ["the X crosses", "the walls", "the black cells", "the obstacles", "the red lines", "the holes",
               "the spikes", "the water", "the fire", "the other balls"]
    lines: list[str] = []
    n_things = len(things)
    for i in range(n_things * 3):
        color = colors[i % len(colors)]
        obj = things[i % n_things]
        other = things[(i * 7 + 3) % n_things]
        ocolor = colors[(i * 5 + 2) % len(colors)]
        place = places[(i * 3) % len(places)]
        verb = verbs[i % len(verbs)]
        verb2 = verbs[(i * 11 + 5) % len(verbs)]
        adj = adjectives[i % len(adjectives)]
        adv = adverbs[i % len(adverbs)]
        word = words[i % len(words)]
        word2 = words[(i * 13 + 7) % len(words)]
        hazard = hazards[i % len(hazards)]
        lines += [
            f"{verb.capitalize()} the {color} {obj} to the {ocolor} {place} without touching {hazard}.",
            f"By the end of the video, does the {color} {obj} reach the {place}?",
            f"Does the {color} {obj} avoid all of {hazard}?",
            f"Does the {color} {obj} stay intact, without splitting or vanishing?",
            f"Does the {adj} {obj} {verb2} {adv} in the {word}?",
            f"Is the {color} {obj} at the {place} in the last frame of the video?",
            f"The {adj} {color} {obj} {verb}s {adv} toward the {ocolor} {other}, and the {word2} is {adj}.",
            f"In the first frame the {obj} is near the {place}; later it {verb2}s {adv}.",
            f"Answer with Yes or No. Does the {obj} touch {hazard}? No",
            f"Answer with Yes or No. Does the {obj} reach the {place}? Yes",
            f"Question: does the video show the {color} {obj} {verb}ing? Answer: Yes",
            f"Question: does the {obj} leave the {word}? Answer: No",
            f"{adj.capitalize()} {word}, {adv} {verb}ed, {other} {word2}.",
            f'{{"goal": "By the end of the video, does the {color} {obj} reach the {place}?", '
            f'"process": ["Does the {obj} avoid {hazard}?", "Does the {obj} {verb2} {adv}?"]}}',
            f'{{"goal": "Is the {obj} {adj}?", "process": []}}',
            f"Frame {i}: the {obj} is in row {i % 9} and column {(i * 7) % 11}, step {i * 13 % 100}.",
        ]
    for n in range(0, 200):
        lines.append(f"{n} {n * 3 % 97} {n * 7 % 89}: {n % 10}.{(n * 7) % 10} seconds, "
                     f"<{n % 10}.{(n * 3) % 10} seconds> {n * 37 % 1000} frames, 0.{n % 10}")
    for i in range(0, len(common), 6):
        chunk = common[i:i + 6]
        lines.append(" ".join(chunk).capitalize() + ".")
        lines.append(", ".join(w.capitalize() for w in reversed(chunk)) + "?")
    answers = ["Yes", "No", "Yes.", "No.", "Yes, it does.", "No, it does not.", "yes", "no", "YES", "NO"]
    for i in range(400):
        a = answers[i % len(answers)]
        lines.append(f"{a} Yes No {a}")
        lines.append(f"The answer is {answers[(i + 1) % 2]}. {answers[i % 2]}")
    lines += [
        "Propose supervision questions on the processes and final objective of this task.",
        "Reply with strict JSON only, with the keys \"goal\" and \"process\".",
        "You are a careful teacher who grades videos. Look at the frames and answer the question.",
        "Watch the video. Describe what happens to the ball, the maze and the walls.",
        "{ } [ ] ( ) \" ' : , . ? ! - _ / * + = < > # @ % & ; ` ~ ^ | \\",
        "A B C D E F G H I J K L M N O P Q R S T U V W X Y Z a b c d e f g h i j k l m n o p q r s t u v w x y z",
    ]
    return lines


def _train_bpe(vocab_size: int):
    """Train a byte-level BPE with the same normalizer / pre-tokenizer Qwen2Tokenizer rebuilds on load."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    reference = Qwen2Tokenizer().backend_tokenizer  # library-provided Qwen pipeline, empty vocabulary
    tok = Tokenizer(models.BPE())
    tok.normalizer = reference.normalizer
    tok.pre_tokenizer = reference.pre_tokenizer
    tok.decoder = reference.decoder
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        show_progress=False,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    state = json.loads(tok.to_str())
    vocab = state["model"]["vocab"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["model"]["merges"]]
    return vocab, merges


def build_tiny_tokenizer(vocab_size: int = _TOKENIZER_VOCAB_SIZE):
    """The shared tiny tokenizer: a ``transformers.Qwen2Tokenizer`` (tokenizers backend).

    Byte-level BPE trained on the built-in corpus, the Qwen special tokens appended after the learned
    vocabulary (as in Qwen's own vocabularies), eos = ``<|im_end|>``, pad = ``<|endoftext|>``, and
    :data:`CHAT_TEMPLATE`. Deterministic (does not depend on any seed).
    """
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    vocab, merges = _train_bpe(vocab_size - len(QWEN_SPECIAL_TOKENS))
    # eos starts as <|endoftext|> so that the special tokens get consecutive ids in Qwen's order.
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, bos_token=None,
                         eos_token="<|endoftext|>", pad_token="<|endoftext|>", model_max_length=32768)
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS], special_tokens=True)
    tok.eos_token = "<|im_end|>"
    tok.chat_template = CHAT_TEMPLATE
    expected = list(range(len(vocab), len(vocab) + len(QWEN_SPECIAL_TOKENS)))
    if tok.convert_tokens_to_ids(list(QWEN_SPECIAL_TOKENS)) != expected or len(tok) != vocab_size:
        raise AssertionError("tiny tokenizer: unexpected special token ids or size")
    for word in ("Yes", "No", " Yes", " No"):
        ids = tok.encode(word, add_special_tokens=False)
        if len(ids) != 1:
            raise AssertionError(f"tiny tokenizer splits {word!r} into {ids}")
    return tok

