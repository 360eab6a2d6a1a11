"""Benchmark (a): bounce classification speed, side by side with Sisimai in the same run.

usage: python bench/bounces_classify_speed.py [CORPUS_DIR] [--rounds N] [--no-install]

Both classifiers go over the same files of ``CORPUS_DIR/eml`` (default: the first
``shared/corpus/bounces/dev`` found beside or above this checkout), in the same order, on the
same CPU (the process is pinned to one core and the Perl child inherits the pinning), and both
*include reading each file*:

* mailgate: ``path.read_bytes()`` then :func:`bounces.classify.classify`, in this process;
* Debian's Sisimai 4.25 (``libsisimai-perl``): ``Sisimai->make($path)`` per file in a Perl child,
  which reads the file itself. The child makes one untimed pass over all the files first (Sisimai
  loads its per-MTA modules lazily), as mailgate does before its first round, so neither side
  is charged its start-up or its first use of a module.

Rounds alternate (mailgate, Sisimai, mailgate, ...) so that load from other work on this shared
machine falls on both. The figure is ``vs_sisimai_same_run`` = median mailgate msg/s divided by
median Sisimai msg/s; the per-round ratios are printed too. When Sisimai is not installed the
bench installs it with apt-get (as root, unless ``--no-install``) and reports "not measured" if
that fails. The last line is JSON. Exits 0 with a message when the corpus is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bounces.classify import classify  # noqa: E402

#: The Perl side: one untimed pass, then one timed pass over the files named on stdin (reading
#: included).
SISIMAI_ROUND = r"""
use strict; use warnings;
use Sisimai; use Time::HiRes qw(time);
my @files = map { chomp; $_ } <STDIN>;
for my $f (@files) { Sisimai->make($f) }
my $t0 = time; my $n = 0;
for my $f (@files) { my $r = Sisimai->make($f); $n += $r ? scalar @$r : 0 }
my $dt = time - $t0;
printf "%d %.6f %d\n", scalar @files, $dt, $n;
"""


def default_corpus() -> Path:
    """The dev corpus next to this checkout or one of its parents (worktrees live deeper)."""
    for base in (ROOT, *ROOT.parents):
        candidate = base / "shared" / "corpus" / "bounces" / "dev"
        if candidate.is_dir():
            return candidate
    return ROOT.parent / "shared" / "corpus" / "bounces" / "dev"


def sisimai_version() -> str:
    """Sisimai's version if Perl can load it, else ``""``."""
    if shutil.which("perl") is None:
        return ""
    done = subprocess.run(
        ["perl", "-MSisimai", "-e", "print $Sisimai::VERSION"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() if done.returncode == 0 else ""


def ensure_sisimai(install: bool) -> str:
    """Sisimai's version, installing Debian's ``libsisimai-perl`` first when it is missing and
    this process may (root, apt-get present); ``""`` when it cannot be had."""
    version = sisimai_version()
    if version or not install:
        return version
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return ""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print("installing libsisimai-perl ...", flush=True)
    subprocess.run(
        ["apt-get", "install", "-y", "libsisimai-perl"], env=env, capture_output=True, check=False
    )
    return sisimai_version()


def mailgate_round(paths: list[Path]) -> float:
    """One timed pass: read each file and classify it; messages per second."""
    start = time.perf_counter()
    for path in paths:
        classify(path.read_bytes())
    return len(paths) / (time.perf_counter() - start)


def sisimai_round(paths: list[Path]) -> float:
    """One timed pass of Sisimai in a Perl child (timed inside it); messages per second."""
    listing = "".join(f"{p}\n" for p in paths)
    done = subprocess.run(
        ["perl", "-e", SISIMAI_ROUND], input=listing, capture_output=True, text=True, check=True
    )
    count, seconds, _records = done.stdout.split()
    return int(count) / float(seconds)


def _pin() -> None:
    """Run on one CPU (the Perl children inherit it), so both sides get the same core."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def main(argv: list[str]) -> int:
    """Alternate timed rounds of both classifiers; print figures, the last line JSON."""
    rounds = int(argv[argv.index("--rounds") + 1]) if "--rounds" in argv else 5
    args = [a for a in argv[1:] if not a.startswith("--") and a != str(rounds)]
    corpus = Path(args[0]) if args else default_corpus()
    if not (corpus / "eml").is_dir():
        print(f"corpus not found at {corpus}; nothing to measure")
        print(json.dumps({"skipped": True}))
        return 0
    _pin()
    paths = sorted((corpus / "eml").iterdir())
    version = ensure_sisimai("--no-install" not in argv)
    for path in paths:  # warm-up: imports, regex compilation, page cache
        classify(path.read_bytes())
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(rounds):
        ours.append(mailgate_round(paths))
        if version:
            theirs.append(sisimai_round(paths))
    median = statistics.median(ours)
    print(f"messages              {len(paths)} (files read in each round)")
    print(f"rounds                {rounds}, alternating")
    print(f"mailgate msg/s        median {median:.0f}  range {min(ours):.0f}-{max(ours):.0f}")
    figures: dict[str, object] = {
        "messages": len(paths),
        "rounds": rounds,
        "msg_per_s_median": round(median, 1),
        "msg_per_s_min": round(min(ours), 1),
        "msg_per_s_max": round(max(ours), 1),
    }
    if theirs:
        their_median = statistics.median(theirs)
        ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
        print(
            f"Sisimai {version} msg/s  median {their_median:.0f}  "
            f"range {min(theirs):.0f}-{max(theirs):.0f}"
        )
        print(f"ratio per round       {', '.join(f'{r:.2f}' for r in ratios)}")
        print(f"vs_sisimai_same_run   {median / their_median:.2f}")
        figures.update(
            {
                "sisimai_version": version,
                "sisimai_msg_per_s_median": round(their_median, 1),
                "sisimai_msg_per_s_min": round(min(theirs), 1),
                "sisimai_msg_per_s_max": round(max(theirs), 1),
                "ratio_per_round": [round(r, 2) for r in ratios],
                "vs_sisimai_same_run": round(median / their_median, 2),
            }
        )
    else:
        print(
            "Sisimai               not measured (libsisimai-perl is not installed and could "
            "not be installed here)"
        )
        figures.update({"sisimai_version": None, "vs_sisimai_same_run": "not measured"})
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
