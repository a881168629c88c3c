"""``qkv generate``: translate, continue text, classify or transcribe with a trained
checkpoint."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from qkv.cli import CLIError
from qkv.cli._common import (
    add_device_arg,
    add_generation_args,
    add_oov_penalty_arg,
    apply_threads,
    check_decoding_flags,
    check_question_text,
    check_takes_question,
    generation_kwargs,
    oov_penalty_kwargs,
    path_arg,
    refuse_unless,
)

#: The espeak-ng voice of ``--say`` without ``--voice``.
VOICE = "en-us"


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(
        name,
        help="generate with a trained checkpoint (translate, continue text, classify, caption, "
        "draw, transcribe)",
        description="Generate outputs for INPUT arguments, or for each line of stdin when none "
        "is given, one line each: a translation (encoder-decoders), the prompt and its "
        "continuation (language models), the top classes (classifiers) or a caption "
        "(captioners) of an input that is an image file or SPLIT:N (e.g. test:0) for image "
        "tasks, the path of a PNG drawn from the caption (text2image, in --out-dir), or a "
        "transcript (asr: an input is a sound file or SPLIT:N; --say TEXT speaks TEXT with "
        "espeak-ng first). The output of an image or sound input (or of --say TEXT) follows "
        "the input and a tab; a SPLIT:N image of a classifier also shows its true class.",
    )
    p.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="texts (or, for image tasks, image files or SPLIT:N); default: stdin lines",
    )
    p.add_argument(
        "--prompt",
        action="append",
        default=[],
        metavar="TEXT",
        help="an input text, after the INPUT arguments (repeatable)",
    )
    p.add_argument(
        "--out-dir",
        type=path_arg,
        metavar="DIR",
        help="text2image: where it writes its PNGs (default: .); refused by the tasks that "
        "write no files",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=path_arg, help="checkpoint or run directory")
    source.add_argument(
        "--hf",
        type=path_arg,
        metavar="DIR",
        help="a Hugging Face model directory (config.json, weights, tokenizer.json)",
    )
    p.add_argument(
        "--question",
        help="vqa: the question to answer about each image INPUT (default: every generated "
        "question of a SPLIT:N scene)",
    )
    p.add_argument(
        "--say",
        action="append",
        metavar="TEXT",
        help="asr: synthesize TEXT with espeak-ng, then transcribe it (repeatable)",
    )
    p.add_argument(
        "--voice",
        help="asr: the espeak-ng voice of --say, an accent with an optional variant "
        f"(default: {VOICE}; e.g. en-gb-scotland+f2); only with --say",
    )
    add_oov_penalty_arg(p)
    add_device_arg(p)
    add_generation_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    apply_threads(args, "generate")
    kw = generation_kwargs(args)
    check_question_text(args.question)
    if args.voice is not None and not args.say:
        raise CLIError(f"--voice {args.voice!r}: only --say speaks (asr: --say TEXT --voice V)")
    if args.say:
        return _say(args, kw)
    inputs = [*args.inputs, *args.prompt] or [
        line.rstrip("\n") for line in sys.stdin if line.strip()
    ]
    if args.hf:
        if args.question is not None:
            raise CLIError("--question needs a vqa --checkpoint; a --hf model takes none")
        if args.out_dir is not None:
            raise CLIError(
                "--out-dir needs a text2image --checkpoint; a --hf model writes no files"
            )
        if args.oov_penalty is not None:
            raise CLIError("--oov-penalty needs an asr --checkpoint; a --hf model has no lexicon")
        from qkv.cli._hf import generate_text

        _print_outputs(list(generate_text(args.hf, inputs, device=args.device, **kw)))
        return 0
    from qkv.tasks import load_trained

    model, task = load_trained(args.checkpoint, device=args.device)
    _check_flags(task, args)
    if args.question is not None:
        kw["question"] = args.question
    if args.out_dir is not None:
        kw["out_dir"] = args.out_dir
    kw |= oov_penalty_kwargs(task, args)
    outputs = task.predict(model, inputs, **kw)
    # the heading after the inputs were read: a bad input's error is then the only line
    if task.prediction:
        print(f"{task.name}: {task.prediction}", file=sys.stderr)
    if task.kind == "lm":  # a language model echoes its prompt
        _print_outputs(outputs, prompts=inputs)
    else:
        _print_outputs(outputs, names=inputs if task.names_inputs else None)
    return 0


def _check_flags(task: Any, args: argparse.Namespace) -> None:
    """Refuse the flags the checkpoint's task would ignore: ``--question`` but for vqa,
    ``--out-dir`` but for text2image, and decoding flags its ``predict`` does not use."""
    if args.question is not None:
        check_takes_question(task)
    if args.out_dir is not None:
        refuse_unless(
            task, "--out-dir", lambda cls: cls.predict_takes("out_dir"), "writes no files"
        )
    check_decoding_flags(task, args)


#: What stands for an output with no text, so that it is not a blank line among the others.
EMPTY = "<empty>"


def _print_outputs(
    outputs: list[str], prompts: list[str] | None = None, names: list[str] | None = None
) -> None:
    """One line per output: a language model's after its prompt, one of an input that names
    a file or ``SPLIT:N`` after that name and a tab; an empty one is :data:`EMPTY`, and
    stderr says once why."""
    empty = 0
    for i, out in enumerate(outputs):
        if not out.strip():
            empty += 1
            out = (" " if prompts else "") + EMPTY
        if names is not None:
            out = f"{names[i]}\t{out}"
        print((prompts[i] if prompts else "") + out)
    if empty:
        print(
            f"qkv generate: {empty} of {len(outputs)} output(s) {EMPTY}: the model produced no "
            "text (it ended the sequence at once, or made only tokens that decode to nothing)",
            file=sys.stderr,
        )


def _say(args: argparse.Namespace, kw: dict[str, Any]) -> int:
    """Speak each ``--say`` text with espeak-ng and print the checkpoint's transcript."""
    if args.hf or args.inputs or args.prompt:
        raise CLIError("--say takes no INPUT or --prompt and needs --checkpoint (an asr model)")
    for text in args.say:
        if not text.strip():  # espeak-ng speaks nothing and exits 0: no sound to transcribe
            raise CLIError(f"--say {text!r}: give some text to speak")
    from qkv.data.audio import SpeechError, synthesize
    from qkv.tasks import load_trained

    model, task = load_trained(args.checkpoint, device=args.device)
    transcribe = getattr(task, "transcribe", None)
    if transcribe is None:
        raise CLIError(f"--say needs a speech recognition checkpoint, not task {task.name!r}")
    _check_flags(task, args)
    try:
        signals = [synthesize(text, args.voice or VOICE) for text in args.say]
    except SpeechError as e:
        raise CLIError(str(e)) from None
    _print_outputs(
        transcribe(model, signals, **kw, **oov_penalty_kwargs(task, args)), names=args.say
    )
    return 0
