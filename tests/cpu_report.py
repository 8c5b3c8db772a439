"""Where a test run's CPU went: sums the lines tests/child_guard/sitecustomize.py wrote to TFK8S_TEST_CPU_LOG.

    TFK8S_TEST_CPU_LOG=/tmp/cpu.jsonl make test
    .venv/bin/python tests/cpu_report.py /tmp/cpu.jsonl

Counts the Python processes the tests started (and the test processes themselves) that ended by returning or
exiting; a process killed by a signal writes no line, so the sums are a lower bound (compare the run's own
user + sys time, from `/usr/bin/time`).
"""
import collections
import json
from pathlib import Path

from tfk8s import yamlfile
from tfk8s.cli import ArgumentParser, entry_point, fail


def what_ran(command):
    """The script or module a command ran (`src/main.py`, `-m pytest`), else its program's name."""
    words = command.split()
    for i, word in enumerate(words):
        if word == "-m" and i + 1 < len(words):
            return f"-m {words[i + 1]}"
        if word == "-c":
            return f"{Path(words[0]).name} -c"
        if word.endswith(".py"):
            return word.split("/src/")[-1] if "/src/" in word else Path(word).name
    if len(words) > 1 and Path(words[0]).name.startswith("python"):
        return Path(words[1]).name  # a stand-in script without a suffix
    return Path(words[0]).name if words else "?"


def read(path):
    lines = yamlfile.read_text(path).splitlines()  # a missing, unreadable or binary file: one line
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            records.append((float(record["cpu"]), bool(record["tensorflow"]), record["test"], record["command"]))
        except (ValueError, KeyError, TypeError):
            fail(f"{path} line {number} is not a line of TFK8S_TEST_CPU_LOG: {line[:80]!r}")
    return records


def report(records, top):
    total = sum(cpu for cpu, *_ in records)
    with_tf = [cpu for cpu, tf, *_ in records if tf]
    out = [f"{total:,.1f} s of CPU in {len(records):,} processes that ended on their own "
           f"({len(with_tf):,} loaded TensorFlow: {sum(with_tf):,.1f} s)"]
    for title, key in (("by test file (the test that started them)",
                        lambda test, command: test.split("::")[0].split("/")[-1] or "(between tests)"),
                       ("by what ran", lambda test, command: what_ran(command))):
        sums = collections.defaultdict(lambda: [0.0, 0, 0])
        for cpu, tf, test, command in records:
            entry = sums[key(test, command)]
            entry[0] += cpu
            entry[1] += 1
            entry[2] += tf
        out.append(title + ":")
        for name, (cpu, count, tf) in sorted(sums.items(), key=lambda item: (-item[1][0], item[0]))[:top]:
            out.append(f"  {cpu:9,.1f} s {count:6,} processes ({tf:,} with TensorFlow)  {name}")
    return "\n".join(out)


@entry_point
def main(argv=None):
    parser = ArgumentParser(prog="tests/cpu_report.py", description=__doc__.splitlines()[0])
    parser.add_argument("log", help="the file TFK8S_TEST_CPU_LOG named during the run")
    parser.add_argument("--top", type=int, default=15, help="rows in each table (default 15)")
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error(f"--top must be at least 1, not {args.top}")
    print(report(read(args.log), args.top))


if __name__ == "__main__":
    main()
