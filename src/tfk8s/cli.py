"""What every command-line tool in src/ shares: one-line errors and exit codes.

A mistake a user can fix (a bad flag, a corrupt file, a server that is not
there) is reported as one line on stderr and a non-zero exit, never a
traceback. Exit codes follow the Kubeflow training operator's rules for
`restartPolicy: ExitCode`: 1 and 2 are permanent (the pod is not restarted),
138 is the code it reserves for "retry me" (a lost peer, for example).
"""
import argparse
import functools
import os
import sys

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


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (`error: ...`) and exit 2, not a usage dump."""

    def error(self, message):
        fail(f"{message} (see {self.prog} --help)", EXIT_USAGE)
