"""What every command-line tool in src/ shares: one-line errors and exit codes.

A mistake a user can fix (a bad flag, a corrupt file, a server that is not
there) is reported as one line on stderr and a non-zero exit, never a
traceback. Exit codes follow the Kubeflow training operator's rules for
`restartPolicy: ExitCode`: 1 and 2 are permanent (the pod is not restarted),
138 is the code it reserves for "retry me" (a lost peer, for example).
"""
import argparse
import contextlib
import functools
import math
import os
import signal
import sys
import threading

EXIT_FAILURE = 1     # permanent: bad data, a failed request
EXIT_USAGE = 2       # permanent: bad flags
EXIT_RETRYABLE = 138  # retryable under restartPolicy ExitCode (128 + SIGUSR1)


class UserError(Exception):
    """A problem the user can fix; its message is the whole report."""

    exit_code = EXIT_FAILURE


class UsageError(UserError):
    """An impossible flag value."""

    exit_code = EXIT_USAGE


class RetryableError(UserError):
    """A transient failure worth a restart (a peer replica went away)."""

    exit_code = EXIT_RETRYABLE


def fail(message, code=EXIT_FAILURE):
    """Print `error: message` on one line and exit with `code`."""
    one_line = " ".join(str(message).split())
    print(f"error: {one_line}", file=sys.stderr, flush=True)
    sys.exit(code)


def entry_point(main):
    """Decorate a `main(argv)` so that UserErrors become one-line exits."""

    @functools.wraps(main)
    def wrapper(argv=None):
        try:
            return main(argv)
        except UserError as err:
            fail(err, err.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except BrokenPipeError:
            # The reader went away (`... | head`): stop quietly, as a shell tool does. Python would
            # otherwise report the pipe again while flushing stdout at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)  # 128 + SIGPIPE

    return wrapper


def child_env():
    """This process's environment for a child that is not a TFJob replica: without TF_CONFIG.

    A tool started inside a replica's pod (or by a test run there) must not
    make its child join that replica's cluster.
    """
    return {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}


@contextlib.contextmanager
def signals_held(signums=(signal.SIGINT, signal.SIGTERM)):
    """Within the block, `signums` are noted, not acted on; as the block ends, each noted one is handed to the
    handler that was in place. For starting a child that must be stopped however we end: a Ctrl-C or `kill`
    arriving inside subprocess.Popen (the child already running, its Popen object not yet ours) would leave
    it behind. Python-level handlers only, so the child starts with the usual dispositions. A signal this
    process ignores stays ignored; off the main thread (where handlers cannot be set), nothing is held."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted = []
    previous = {signum: signal.getsignal(signum) for signum in signums}
    for signum, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(signum, lambda number, frame: noted.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(noted):
            handler = previous[signum]
            if callable(handler):
                handler(signum, None)
            else:  # SIG_DFL (or None: set outside Python): what the signal would have done
                signal.raise_signal(signum)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (`error: ...`) and exit 2, not a usage dump."""

    def error(self, message):
        fail(f"{message} (see {self.prog} --help)", EXIT_USAGE)


# One day: longer than any wait, poll or timeout here needs, and short enough for time.sleep and deadlines
# (time.sleep(1e30) is an OverflowError, time.monotonic() + inf a deadline that never comes).
MAX_SECONDS = 86400


def duration(unit="seconds", zero=False, maximum=None, integer=False):
    """The one rule for a time flag: an argparse `type` accepting a finite number of `unit`s, positive (or 0
    with `zero`, where 0 means "never" or "at once"), at most `maximum` (a day by default); nan, inf, negative
    and huge values are one line (exit 2), as every other bad flag."""
    scale = {"seconds": 1, "ms": 1e3, "micros": 1e6}[unit]
    maximum = MAX_SECONDS * scale if maximum is None else maximum

    def parse(text):
        try:
            value = int(text) if integer else float(text)
        except (TypeError, ValueError):
            value = None
        if value is None or not math.isfinite(value) or value < 0 or (value == 0 and not zero) or value > maximum:
            kind = "whole number" if integer else "finite number"
            low = "from 0" if zero else "more than 0 and"
            raise argparse.ArgumentTypeError(f"must be a {kind} of {unit} {low} up to {maximum:g}, not {text!r}")
        return value

    parse.__name__ = "duration"  # argparse names the type in its messages
    return parse


def split_at_dashes(argv):
    """(the command's own arguments, those after `--`, which it passes on to the trainer)."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    at = argv.index("--")
    return argv[:at], argv[at + 1:]
