"""Command-line conventions shared by every tool: model and question flags, help, user errors.

- Every flag's help shows its default (`HelpFormatter`).
- LLaVA's underscore flags keep working beside hyphenated spellings (`--max-new-tokens` and
  `--max_new_tokens` are one flag).
- A user error (a bad file, flag or input) ends the tool with one line, `error: ...`, and exit
  status 1 (`run_main`); argparse's own errors exit with 2. Tracebacks are for bugs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from llava.conversation import DEFAULT_CONV_MODE, conv_templates


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, and '(default: X)' after every optional flag's help."""

    def _get_help_string(self, action):
        if action.required:
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error: `error: MESSAGE (see --help)`, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see --help)\n")


def new_parser(description: str | None) -> ArgumentParser:
    return ArgumentParser(description=description, formatter_class=HelpFormatter)


# Errors a user can fix: the message says what and where. ValueError covers the project's own
# JsonlError, CheckpointError and the refusals of the run plumbing.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
               PermissionError, NotImplementedError)


def run_main(main: Callable[[], object]) -> int:
    """Call `main`; a user error prints `error: ...` on stderr and gives exit status 1."""
    try:
        main()
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1.

    >>> positive_int("3")
    3
    """
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Flags shared by every tool that loads LLaVA."""
    group = parser.add_argument_group("model")
    group.add_argument("--model-path", "--model_path", dest="model_path", required=True,
                       help="an original llava-v1.5 folder or a llava-hf folder")
    group.add_argument("--model-base", "--model_base", dest="model_base", default=None,
                       help="base model folder of a LoRA/projector-only checkpoint")
    group.add_argument("--vision-tower", default=None,
                       help="local CLIP folder (overrides the config's mm_vision_tower)")
    group.add_argument("--device", default="auto", help="cuda, cuda:N, cpu; auto = cuda if available")
    group.add_argument("--dtype", default="auto",
                       help="language model dtype: float16, bfloat16, float32; auto = float16 on CUDA, float32 on CPU")
    group.add_argument("--vision-dtype", default="float32",
                       help="CLIP's dtype, float32 as under LLaVA's evaluation scripts; float16, bfloat16, or auto = --dtype")
    group.add_argument("--attn-implementation", default=None, help="sdpa (when None), eager, flash_attention_2")


def add_conv_mode_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--conv-mode", "--conv_mode", dest="conv_mode", default=DEFAULT_CONV_MODE,
                        choices=sorted(conv_templates),
                        help="prompt template; vicuna_v1 is what LLaVA-1.5's own evaluation scripts pass")


def add_question_args(parser: argparse.ArgumentParser, batch_unit: str = "questions per batch",
                      batch_default: int | None = 1) -> None:
    """LLaVA's question-file flags (with hyphenated and underscore spellings)."""
    group = parser.add_argument_group("questions")
    group.add_argument("--image-folder", "--image_folder", dest="image_folder", required=True,
                       help="folder the questions' `image` fields are relative to")
    group.add_argument("--question-file", "--question_file", dest="question_file", required=True,
                       help="LLaVA question jsonl (question_id, image, text, category)")
    group.add_argument("--answers-file", "--answers_file", dest="answers_file", required=True,
                       help="LLaVA answers jsonl to write (appended to: a rerun resumes)")
    add_conv_mode_arg(group)
    group.add_argument("--num-chunks", "--num_chunks", dest="num_chunks", type=positive_int, default=1,
                       help="split the question file into this many consecutive chunks")
    group.add_argument("--chunk-idx", "--chunk_idx", dest="chunk_idx", type=int, default=0,
                       help="the chunk this run answers (0-based)")
    group.add_argument("--batch-size", "--batch_size", dest="batch_size", type=positive_int, default=batch_default,
                       help=batch_unit)
    group.add_argument("--num-workers", "--num_workers", dest="num_workers", type=int, default=None,
                       help="image-loading processes; None = 4 on CUDA, 0 on CPU")
    group.add_argument("--max-new-tokens", "--max_new_tokens", dest="max_new_tokens", type=positive_int,
                       default=128, help="answer length limit in tokens")


def load_model_from_args(args):
    from llava.model.builder import load_pretrained_model

    return load_pretrained_model(
        args.model_path,
        args.model_base,
        device=args.device,
        dtype=args.dtype,
        vision_tower=args.vision_tower,
        vision_dtype=args.vision_dtype,
        attn_implementation=args.attn_implementation,
    )


def _abspath(path: str | None) -> str | None:
    return None if path is None else os.path.abspath(os.path.expanduser(path))


def model_settings(args) -> dict:
    """The model settings that change outputs, resolved (no 'auto' left), for manifests.

    Called before the model loads, so a refused resume costs nothing.
    """
    from llava.model.builder import resolve_device, resolve_dtype, resolve_vision_dtype

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    return {
        "model_path": _abspath(args.model_path),
        "model_base": _abspath(args.model_base),
        "vision_tower": _abspath(args.vision_tower),
        "dtype": str(dtype).removeprefix("torch."),
        "vision_dtype": str(resolve_vision_dtype(args.vision_dtype, dtype, device)).removeprefix("torch."),
        "attn_implementation": args.attn_implementation or "sdpa",
    }


def check_readable_file(path: str, what: str) -> str:
    """`path` expanded; a missing file or a folder is a one-line error naming `what`."""
    path = os.path.expanduser(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} {path} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{what} {path} is a folder, not a file")
    return path
