"""README.md and docs/ describe the present: their commands run, their lists match the code.

* every ``matta-rec ...`` line of README's shell blocks parses with the
  command's own parser (a renamed or removed option fails here);
* every ``make X`` README names is a Makefile target, and ``.ci/run`` runs
  ``make test``, the README's test command;
* no measurement dates or times in README.md and docs/ (the figures are the
  present ones; history lives in git);
* docs/benchmarks.md has a section per script in bench/ and names no
  script that is not there;
* docs/design.md states the package order that tests/test_package_layers.py
  enforces.

README's demo table is checked against a demo run in tests/test_demo.py.
"""

import os
import re
import shlex
import sys

import pytest

from matta_rec.cli.main import COMMANDS, build_parser

sys.path.insert(0, os.path.dirname(__file__))
from test_package_layers import ORDER  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*parts):
    with open(os.path.join(REPO, *parts), encoding="utf-8") as handle:
        return handle.read()


def _shell_lines(markdown):
    """Commands of the ```bash blocks, continuation lines joined, comments dropped."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def _matta_rec_commands():
    commands = []
    for line in _shell_lines(_read("README.md")):
        for part in re.split(r"&&|;", line):
            words = shlex.split(part)
            if words and words[0] == "matta-rec":
                commands.append(words[1:])
    return commands


def test_readme_has_matta_rec_commands_for_every_step():
    named = {next(w for w in words if not w.startswith("-")) for words in _matta_rec_commands()}
    assert {"generate", "inspect-data", "train", "export", "evaluate", "ablate", "demo"} <= named


@pytest.mark.parametrize("words", _matta_rec_commands(), ids=" ".join)
def test_readme_command_parses(words):
    command = next(w for w in words if not w.startswith("-"))
    assert command in COMMANDS, f"README runs `matta-rec {command}`, which does not exist"
    try:
        args = build_parser(load=command).parse_args(words)
    except SystemExit as exc:  # argparse reports the bad option on stderr
        pytest.fail(f"README's `matta-rec {' '.join(words)}` does not parse (exit {exc.code})")
    assert callable(getattr(args, "_run", None))


def test_readme_make_targets_exist_and_ci_runs_make_test():
    targets = set(re.findall(r"^([\w-]+):", _read("Makefile"), re.M))
    named = set(re.findall(r"\bmake ([\w-]+)", _read("README.md")))
    assert {"demo", "test"} <= named
    assert named <= targets, f"README names make targets the Makefile lacks: {named - targets}"
    ci = [line.strip() for line in _read(".ci", "run").splitlines()
          if line.strip() and not line.strip().startswith("#")]
    assert "make test" in ci


@pytest.mark.parametrize("doc", ["README.md", "docs/benchmarks.md", "docs/design.md"])
def test_docs_carry_no_measurement_dates(doc):
    text = _read(*doc.split("/"))
    # Dates inside log paths (dt=2024-01-01) name data, not when something was measured.
    dates = [m.group(0) for m in re.finditer(r"(?<!dt=)\b(19|20)\d\d-[01]\d-[0-3]\d\b", text)]
    times = re.findall(r"\b\d\d:\d\d(?::\d\d)? ?UTC\b", text)
    assert not dates and not times, f"{doc} carries dates/times {dates + times}"


def test_benchmarks_doc_covers_exactly_the_bench_scripts():
    scripts = sorted(n for n in os.listdir(os.path.join(REPO, "bench"))
                     if n.endswith(".py") and not n.startswith("_"))
    doc = _read("docs", "benchmarks.md")
    named = sorted(set(re.findall(r"bench/(\w+\.py)", doc)))
    assert named == scripts, f"docs/benchmarks.md names {named}; bench/ holds {scripts}"
    sections = re.findall(r"^## .*`bench/(\w+\.py)`", doc, re.M)
    assert sorted(sections) == scripts, "one `## ... bench/<script>.py` section per script"


def test_design_doc_states_the_enforced_package_order():
    doc = _read("docs", "design.md")
    line = next((ln for ln in doc.splitlines() if ln.strip().startswith("errors, utils ->")),
                None)
    assert line, "docs/design.md needs the line `errors, utils -> metrics -> ... -> cli`"
    assert tuple(re.findall(r"\w+", line)) == ORDER
