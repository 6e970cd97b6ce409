"""The `dvcl` command: a thin dispatcher over one module per subcommand.

Each subcommand module in ``dvcl.cli`` defines ``add_parser(subparsers)`` and ``run(args) -> int`` and keeps
heavy imports (torch, MONAI) inside ``run`` so that ``dvcl --help`` answers instantly. Errors caused by
input (:class:`dvcl.errors.DVCLError`, and operating-system errors on the user's paths: disk full, read-only
or foreign folder, missing file) become one line on stderr, an ``error`` event in ``--progress json`` mode and
exit status 2; everything else is a bug of ours and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from typing import List, Optional

from dvcl import __version__
from dvcl.errors import DVCLError
from dvcl.utils import progress
from dvcl.utils.atomic import USER_WRITE_ERRNOS, describe_os_error
from dvcl.utils.logging import setup_logging
from dvcl.utils.threads import configure_threads, thread_count

#: subcommand -> module; the order is the order of `dvcl --help`.
COMMANDS = {
    "demo": "dvcl.cli.demo",
    "phantom": "dvcl.cli.phantom",
    "synth": "dvcl.cli.synth",
    "prepare": "dvcl.cli.prepare",
    "train": "dvcl.cli.train",
    "experiment": "dvcl.cli.experiment",
    "compare": "dvcl.cli.compare",
    "export": "dvcl.cli.export",
    "ensemble": "dvcl.cli.ensemble",
    "postprocess": "dvcl.cli.postprocess",
    "adapt": "dvcl.cli.adapt",
    "segment": "dvcl.cli.segment",
    "evaluate": "dvcl.cli.evaluate",
    "info": "dvcl.cli.info",
}

log = logging.getLogger("dvcl")


def _on_sigterm(signum, frame):  # pragma: no cover - exercised through subprocess tests
    """SIGTERM (the Slicer module's Cancel) unwinds like Ctrl-C, so cleanup handlers remove partial outputs."""
    raise KeyboardInterrupt


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dvcl",
        description="Semi-supervised multi-organ CT segmentation (DVCL co-training): prepare data, train, "
        "segment, evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"dvcl {__version__}")
    parser.add_argument("--progress", choices=progress.MODES, default="bar",
                        help="progress display: tqdm bar on stderr, JSON lines on stdout (for the Slicer "
                        "module), or none (default: bar)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("--threads", type=thread_count, default=None, metavar="N",
                        help="CPU threads for torch (default: chosen from the usable CPUs and the current load; "
                        "an OMP_NUM_THREADS you set is respected)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # a subcommand not shipped in this build
        module.add_parser(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 1
    setup_logging(-1 if args.quiet else args.verbose)
    # -q: no bars either (JSON events are for programs and stay)
    progress.set_mode("none" if args.quiet and args.progress == "bar" else args.progress)
    configure_threads(args.command, args.threads)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return int(args.func(args) or 0)
    except DVCLError as exc:
        return _user_error(str(exc), type(exc).__name__)
    except OSError as exc:
        if exc.errno not in USER_WRITE_ERRNOS:
            raise  # a bug of ours: keep the traceback
        return _user_error(describe_os_error(exc), "OSError")
    except MemoryError:
        return _user_error(f"not enough memory for `dvcl {args.command}` (try smaller inputs"
                           + (", or --max-memory" if args.command == "segment" else "") + ")", "MemoryError")
    except KeyboardInterrupt:
        progress.emit("error", message="cancelled")
        print("dvcl: cancelled", file=sys.stderr)
        return 130


def _user_error(message: str, kind: str) -> int:
    """The one error path for what a user can cause: one line on stderr, an ``error`` event, exit status 2."""
    line = " ".join(message.split())  # one line, whatever the message held
    progress.emit("error", message=line, type=kind)
    print(f"dvcl: error: {line}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
