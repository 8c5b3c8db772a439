"""What every command-line tool shares (src/cli.py), in real processes."""
import subprocess
import sys

from conftest import REPO

TOOL = """
from tfk8s.cli import entry_point

@entry_point
def main(argv=None):
    for i in range(10**6):
        print("line", i)

main()
"""


def test_a_reader_that_goes_away_stops_a_tool_quietly_with_sigpipes_code():
    """`tool | head -1`: the reader leaves after one line; the tool stops without a traceback."""
    process = subprocess.Popen([sys.executable, "-c", TOOL], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    first = process.stdout.readline()
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141, stderr
    assert first == b"line 0\n" and stderr == ""
