"""Command line: ``python -m workshop_lib <method> train|evaluate ...``, ``rd4ad fps|export``, ``fewshot ...``,
``predict``, ``calibrate``, ``weights list|fetch``, ``data synthetic|download-mvtec``.

PatchCore's flags mirror patchcore-inspection's ``bin/run_patchcore.py`` and ``bin/load_and_evaluate_patchcore.py``
(one flat command instead of click's chained sub-commands, and ``--device auto|cpu|cuda`` instead of ``--gpu``).
Every registered method gets ``train`` and ``evaluate``; their model flags are generated from the constructors
(flags.py), so ``--help`` shows the same defaults as the Python API.

``main`` returns the results instead of calling ``sys.exit``, and usage errors raise ``UsageError``, so it runs
inside ``commandline_args`` in a notebook without ``try/except SystemExit``; ``run`` is the shell's entry point
(``python -m workshop_lib`` and the installed ``workshop-lib`` command): it prints errors as one line.
"""

import argparse
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from ..errors import UsageError, WorkshopError
from ..presets import Preset
from .compare import add_compare_commands
from .fewshot import add_fewshot_commands
from .methods import add_all_method_commands, preset_in
from .predict import add_predict_commands
from .tools import add_tool_commands


class Parser(argparse.ArgumentParser):
    """argparse with the defaults in every help text, raising UsageError instead of exiting."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # argparse would print and sys.exit(2)
        raise UsageError(f"{self.format_usage()}{self.prog}: error: {message}")


@contextmanager
def commandline_args(*args: str) -> Iterator[list[str]]:
    """Temporarily replace ``sys.argv`` (argv[0] included), restoring it even when the body raises."""
    saved = list(sys.argv)
    sys.argv[:] = [str(a) for a in args]
    try:
        yield sys.argv
    finally:
        sys.argv[:] = saved


def build_parser(preset: Preset | None = None) -> Parser:
    """The whole command line; ``preset`` gives the defaults of its method's ``train``."""
    parser = Parser(prog="python -m workshop_lib", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    add_all_method_commands(commands, Parser, preset)
    add_fewshot_commands(commands, Parser)
    add_predict_commands(commands)
    add_compare_commands(commands)
    add_tool_commands(commands, Parser)
    return parser


def main(argv: Sequence[str] | None = None):
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the command and return its result."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        preset = preset_in(argv)
    except ValueError as error:
        raise UsageError(str(error)) from None
    args = build_parser(preset).parse_args(argv)
    return args.handler(args)


def run(argv: Sequence[str] | None = None) -> int:
    """The shell's entry point: a usage error exits with 2, any other error a user can act on with 1, Ctrl+C with 130
    (saying where the last checkpoint is), each printed as its message without a traceback."""
    try:
        main(argv)
    except UsageError as error:
        print(error, file=sys.stderr)
        return 2
    except WorkshopError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as interrupt:
        print(f"\nInterrupted. {interrupt}".rstrip(), file=sys.stderr)
        return 130
    return 0
