"""User errors end every entry point with one line naming the problem, not a traceback.

A typo in a config, a refused work dir, a missing or damaged checkpoint, a non-finite loss:
each of our checks raises with a message that names the problem and the fix, and a Python
traceback around it only hides that line. ``run_entry_point(main)`` prints ``error: <message>``
to stderr and exits with status 2 (argparse's status for a bad command line) for the errors
below; anything else (a bug) keeps its traceback. ``--debug`` on the command line or
``DISTILL_DEBUG=1`` in the environment keeps the traceback of every error.
"""
from __future__ import annotations

import os
import sys

from distill.checkpoint import CorruptCheckpointError
from distill.config_checks import ConfigError

DEBUG_FLAG, DEBUG_ENV = '--debug', 'DISTILL_DEBUG'


def user_errors() -> tuple:
    """The exception types our checks raise for what a user can fix: config and command-line
    mistakes (ConfigError, ValueError, KeyError, TypeError from a config value), files
    (missing, a directory, a refused or unwritable work dir or output, a damaged or refused
    checkpoint, a data file that cannot be decoded) and runs that stop on a non-finite
    value."""
    from distill.engines.core.guards import NonFiniteLossError
    from distill.engines.core.work_dir_lock import WorkDirNotWritableError
    return (ConfigError, ValueError, KeyError, TypeError, FileExistsError, FileNotFoundError,
            IsADirectoryError, PermissionError, WorkDirNotWritableError, CorruptCheckpointError,
            NonFiniteLossError)


def add_debug_option(parser) -> None:
    """``--debug`` in an entry point's ``--help`` (``run_entry_point`` takes it off the
    command line before the parser sees it; accepted here too, for a direct ``main(argv)``)."""
    parser.add_argument(DEBUG_FLAG, action='store_true',
                        help=f'on an error, print the Python traceback as well as the one '
                             f'error line (also {DEBUG_ENV}=1)')


def error_line(err: BaseException) -> str:
    # KeyError's str() quotes its message; its first argument is the message itself
    message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    return f'error: {worker_message(message)}'


def worker_message(message: str) -> str:
    """The message of an error raised in a DataLoader worker process: torch raises it again in
    the main process with the worker's whole traceback as its text ('Caught X in DataLoader
    worker process 0. Original Traceback ...'); its last line holds the message itself."""
    if '\nOriginal Traceback' not in message:
        return message
    last = [line for line in message.splitlines() if line.strip()][-1]
    kind, colon, text = last.partition(': ')
    return text if colon and kind.replace('.', '').replace('_', '').isalnum() else last


def run_entry_point(main, *args, **kwargs):
    """``main(*args, **kwargs)``, ending a user error with one line (see the module)."""
    debug = DEBUG_FLAG in sys.argv[1:] or os.environ.get(DEBUG_ENV, '') not in ('', '0')
    if DEBUG_FLAG in sys.argv[1:]:
        sys.argv.remove(DEBUG_FLAG)
    if debug:
        return main(*args, **kwargs)
    try:
        return main(*args, **kwargs)
    except user_errors() as err:
        print(f'{error_line(err)}\n(for the traceback: rerun with {DEBUG_FLAG} or '
              f'{DEBUG_ENV}=1)', file=sys.stderr, flush=True)
        raise SystemExit(2) from None
