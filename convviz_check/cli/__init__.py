"""The ``convviz-check`` command: an argparse tree whose subcommands live with the code
they drive. Each subcommand module provides ``add_parser(subparsers)`` (registering a
``func``); importing them is light (no Keras) so ``--help`` is fast.

Errors end the command with exit status 2 and one line on stderr naming the problem;
``--debug`` adds the traceback. Unless ``--verbose``, the frameworks' start-up logs
(TensorFlow's C++ log, absl) and their own deprecation warnings are kept off the
terminal; warnings raised by convviz_check itself are always shown.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import re
import sys
import threading
import traceback
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

# Each module defines add_parser(subparsers).
SUBCOMMANDS: list[str] = [
    "convviz_check.examples.demo",  # demo
    "convviz_check.cli.explain",  # explain
    "convviz_check.cli.golden",  # golden list/show/diff/accept/prune
    "convviz_check.cli.agree",  # agree
    "convviz_check.cli.calibrate",  # calibrate
]

# Modules whose DeprecationWarnings are about the frameworks' own internals.
_FRAMEWORK_MODULES = r"(keras|keras_hub|tensorflow|tf_keras|absl|jax|jaxlib|torch|google)(\.|$)"
# The native start-up log lines of TensorFlow (and of keras-hub's TensorFlow, under any
# backend): absl writes them to stderr before its log is initialized, whatever
# TF_CPP_MIN_LOG_LEVEL says, so they are filtered out of file descriptor 2.
_NATIVE_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\]"
    r"|E\d{4} [\d:.]+ +\d+ cuda_\w+\.cc:\d+\] failed call to cuInit"
    r"|To enable the following instructions: )"
)
_GLOBAL_FLAGS = (
    ("--debug", "on an error, print the traceback too"),
    ("--verbose", "show the frameworks' start-up logs and warnings"),
)


def _add_global_flags(parser: argparse.ArgumentParser, top: bool) -> None:
    """``--debug`` and ``--verbose`` on ``parser`` and on every subcommand below it (so
    both ``convviz-check --debug explain`` and ``convviz-check explain --debug`` work)."""
    for flag, text in _GLOBAL_FLAGS:
        if flag not in parser._option_string_actions:
            default = False if top else argparse.SUPPRESS
            parser.add_argument(flag, action="store_true", default=default, help=text)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                _add_global_flags(sub, top=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convviz-check",
        description="Make what a convnet looks at testable: activations, filter patterns "
        "and Grad-CAM, golden files and cross-backend agreement.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"convviz_check {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod_name in SUBCOMMANDS:
        importlib.import_module(mod_name).add_parser(sub)
    _add_global_flags(parser, top=True)
    return parser


def quiet_frameworks() -> None:
    """Keep the frameworks' start-up logs off the terminal: TensorFlow's C++ log (read
    once, when TensorFlow is imported: set before) and absl's Python log. A value the
    user set for ``TF_CPP_MIN_LOG_LEVEL`` is kept."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # TensorFlow's Python warnings (``WARNING:tensorflow:... triggered tf.function
    # retracing`` when several models predict in one process) go through this logger.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging
    except ImportError:
        return
    absl_logging.set_verbosity(absl_logging.ERROR)
    absl_logging.set_stderrthreshold("error")


def _pump(read_fd: int, write_fd: int) -> None:
    """Copy lines from ``read_fd`` to ``write_fd``, leaving out native start-up noise."""
    with os.fdopen(read_fd, "rb", closefd=True) as pipe:
        for raw in pipe:
            if not _NATIVE_NOISE.match(raw.decode("utf-8", "replace")):
                os.write(write_fd, raw)


@contextlib.contextmanager
def native_logs_filtered() -> Iterator[None]:
    """While inside, lines written to file descriptor 2 (by C++ libraries as well as by
    Python) pass through a filter that drops the frameworks' start-up log lines; every
    other line reaches stderr at once."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable stderr: nothing to filter
        yield
        return
    read_fd, write_fd = os.pipe()
    pump = threading.Thread(target=_pump, args=(read_fd, saved), daemon=True)
    pump.start()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the pump sees its end
        pump.join(timeout=5)
        os.close(saved)


def error_line(error: BaseException, debug: bool = False) -> str:
    """One line naming the problem (a message's lines joined; a worker's traceback
    left for ``--debug``)."""
    text = str(error)
    if not debug and "\nWorker traceback" in text:
        text = text.split("\nWorker traceback")[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    from ..errors import ConvvizError

    message = " ".join(lines) or type(error).__name__
    if not isinstance(error, ConvvizError):
        message = f"{type(error).__name__}: {message}"
    return f"convviz-check: error: {message}"


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``; a subcommand that sets ``collect_extra`` (the name of a list
    attribute) also takes positional arguments given after its options (argparse
    alone refuses ``explain MODEL --out DIR IMAGE``)."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        target = getattr(args, "collect_extra", None)
        options = [e for e in extras if e.startswith("-")]
        if target is None or options:
            parser.error(f"unrecognized arguments: {' '.join(options or extras)}")
        setattr(args, target, [*getattr(args, target), *extras])
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
    if not getattr(args, "func", None):
        # No command is a usage error (exit 2, as argparse's own): a script that calls
        # `convviz-check` with an empty variable must not pass.
        parser.print_help(sys.stderr)
        print("convviz-check: error: a COMMAND is required (see above)", file=sys.stderr)
        return 2
    debug = bool(getattr(args, "debug", False))
    verbose = bool(getattr(args, "verbose", False))
    if not verbose:
        quiet_frameworks()
    quiet = contextlib.nullcontext() if verbose else native_logs_filtered()
    with quiet, warnings.catch_warnings():
        warnings.showwarning = _show_warning  # restored when the block ends
        if not verbose and not sys.warnoptions:
            warnings.filterwarnings(
                "ignore", category=DeprecationWarning, module=_FRAMEWORK_MODULES
            )
        try:
            return int(args.func(args) or 0)
        except KeyboardInterrupt:
            print("convviz-check: interrupted", file=sys.stderr)
            return 130
        except Exception as e:  # one line; the traceback with --debug
            if debug:
                traceback.print_exc()
            line = error_line(e, debug)
            if not debug and not _is_expected(e):
                line += " (--debug shows the traceback)"
            print(line, file=sys.stderr)
            return 2


_PYTHON_SHOWWARNING = warnings.showwarning


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """Our warnings as one line, like the errors; the frameworks' as Python shows them."""
    from ..errors import ConvvizWarning

    if issubclass(category, ConvvizWarning):
        print(f"convviz-check: warning: {message}", file=sys.stderr)
        return
    _PYTHON_SHOWWARNING(message, category, filename, lineno, file, line)


def _is_expected(error: BaseException) -> bool:
    from ..errors import ConvvizError

    return isinstance(error, ConvvizError | OSError)
