"""Every text a user reads says what is true today: nothing "pending", no TODO, no issue numbers.

A user reads the README, the docs, the profiles and example files, the command
lines' help and every message the programs print.  None of it may promise
work to come ("pending", "to be wired in", "arrives with the sensors issue")
or send the reader to an issue tracker they cannot see ("issue 3", "(issue:
on-device models)").  Program messages are the string literals of edge/,
deploy/, cloud/ and drivers/ (docstrings and comments are for developers and
are not scanned); the command lines' help is also rendered and scanned.
"""

from __future__ import annotations

import argparse
import ast
import re
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

FORBIDDEN = [
    (re.compile(r"\bpending\b", re.IGNORECASE), "says something is pending"),
    (re.compile(r"\b(?:TODO|FIXME|XXX)\b"), "a TODO"),
    (re.compile(r"\bto be wired\b|\bnot (?:yet )?wired\b", re.IGNORECASE), "work to come"),
    (re.compile(r"\barrives? with\b", re.IGNORECASE), "work to come"),
    (re.compile(r"\bissues? ?#?\d+", re.IGNORECASE), "an issue number"),
    (re.compile(r"\(issue:|\bissue #", re.IGNORECASE), "an issue reference"),
    (
        re.compile(r"\b(?:sensors?|models?|nap|water|ota|bench|e-?mail) issues?\b", re.IGNORECASE),
        "an issue by name",
    ),
    (re.compile(r"\bin the issues\b|\bsee the issues?\b", re.IGNORECASE), "the issue tracker"),
]

# Uses of the words above that are true today, each with why.  (path pattern, the match's
# surrounding text must match this, why)
ALLOWED = [
    # A mail's delivery state in the notifier: queued and not yet sent.  The store keeps it
    # as status 'pending' and `satoyama-notifier status` prints "N pending" - a state, not
    # work to come.
    ("cloud/*.py", re.compile(r"pending", re.IGNORECASE), "a mail's delivery state"),
    ("docs/notifier.md", re.compile(r"pending", re.IGNORECASE), "a mail's delivery state"),
    ("`satoyama-notifier*", re.compile(r"pending", re.IGNORECASE), "a mail's delivery state"),
    # An update request the daemon left for the updater, waiting to be carried out: the
    # units' descriptions (`systemctl status`) name that state.
    ("systemd/satoyama-update.*", re.compile(r"pending update"), "a request waiting"),
    # Reads waiting on a serial port when it closes: a state of the port.
    ("docs/protocols/*.md", re.compile(r"pending reads"), "reads waiting on the port"),
    # A citation of an upstream bug, not of this project's tracker.
    ("docs/scaling.md", re.compile(r"mosquitto's issue #\d+"), "an upstream bug report"),
]

TEXT_FILES = [
    "README.md",
    "pyproject.toml",  # its comments explain the extras to whoever picks one
    "docs/**/*.md",
    "deploy/profiles/*.toml",
    "deploy/boot/*.sh",
    "deploy/broker/*.conf",
    "deploy/broker/*.acl",
    "edge/sim/sites/*.toml",
    "edge/sim/scenarios/*.toml",
    "examples/*.toml",
    "systemd/*",
    "models/*/MODEL_CARD.md",
    "cloud/templates/*",
    "cloud/console/templates/*",
    "cloud/console/static/*.js",
    "scripts/*.sh",
]
SOURCE_PACKAGES = ["edge", "deploy", "cloud", "drivers"]


def hits(text: str, path: str, first_line: int = 1) -> Iterator[str]:
    """What is wrong with ``text`` (from ``path``, starting at ``first_line``): one line
    per forbidden phrase, naming where it is."""
    for pattern, why in FORBIDDEN:
        for m in pattern.finditer(text):
            around = text[max(0, m.start() - 40) : m.end() + 40]
            allowed = any(
                fnmatch(path, glob) and ok.search(around) and ok.search(m.group(0) + around)
                for glob, ok, _ in ALLOWED
            )
            if not allowed:
                line = first_line + text.count("\n", 0, m.start())
                shown = " ".join(around.split())
                yield f"{path}:{line}: {why}: ...{shown}..."


def _files() -> Iterator[Path]:
    for pattern in TEXT_FILES:
        yield from sorted(p for p in REPO.glob(pattern) if p.is_file())


def _messages(path: Path) -> Iterator[tuple[int, str]]:
    """The string literals of a module that are not docstrings (or attribute docstrings)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    bare = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in bare:
            yield node.lineno, node.value


def _help_texts() -> Iterator[tuple[str, str]]:
    """Every command's and subcommand's rendered --help."""
    from cloud.cli import build_parser as cloud_parser
    from cloud.console.cli import build_parser as console_parser
    from deploy.cli import build_parser as deploy_parser
    from deploy.updater import build_parser as updater_parser
    from edge.cli import build_parser as edge_parser

    def walk(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str]]:
        yield parser.prog, parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from walk(sub)

    for make in (edge_parser, deploy_parser, updater_parser, cloud_parser, console_parser):
        yield from walk(make())


def test_no_user_facing_text_promises_work_to_come_or_names_an_issue() -> None:
    problems: list[str] = []
    scanned = 0
    for path in _files():
        rel = str(path.relative_to(REPO))
        problems += hits(path.read_text(encoding="utf-8"), rel)
        scanned += 1
    for package in SOURCE_PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = str(path.relative_to(REPO))
            for lineno, text in _messages(path):
                problems += hits(text, rel, lineno)
            scanned += 1
    helps = list(_help_texts())
    for prog, text in helps:
        problems += hits(text, f"`{prog} --help`")
    assert scanned > 100 and len(helps) > 20, (scanned, len(helps))  # the scan really ran
    assert not problems, "\n".join(problems)


def test_the_scan_catches_what_users_were_shown_before() -> None:
    """The phrases this test was written against are caught; ordinary words are not."""
    for old in (
        "Check the wiring: edge check (arrives with the sensors issue; until then:",
        "the daemon's side is to be wired in",
        'status = "pending"',
        "PENDING the sensors issue (issue 3) and the model issue (issue 4)",
        "# Model training (issue: on-device models). Never installed on a device.",
        "Open work is in the issues.",
        "refused: profile 'water-level' is pending",
        "TODO: wire the mat",
    ):
        assert list(hits(old, "docs/x.md")), old
    for fine in (
        '"issued": "2026-06-01T03:00:00Z"',
        "184-236 B per event, depending on how TCP's ACKs fall",
        "a known issue with some SD cards",
    ):
        assert not list(hits(fine, "docs/x.md")), fine
    # An allowance holds only where it is given.
    assert not list(hits("mails: 3 pending, 2 sent", "cloud/cli.py"))
    assert list(hits("mails: 3 pending, 2 sent", "deploy/cli.py"))
