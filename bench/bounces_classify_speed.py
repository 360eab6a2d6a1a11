"""Benchmark (a): bounce classification alone, messages per second on one core.

usage: python bench/bounces_classify_speed.py [CORPUS_DIR] [--rounds N]

Reads every message of ``CORPUS_DIR/eml`` (default ``../shared/corpus/bounces/dev``) into
memory first, so only :func:`bounces.classify.classify` is timed; the process is pinned to one
CPU where the platform allows. Reports the median of N rounds; the last line is JSON. Exits 0
with a message when the corpus is absent. Reference: Debian's Sisimai 4.25 does ~870 msg/s here.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bounces.classify import classify  # noqa: E402

DEFAULT = ROOT.parent / "shared" / "corpus" / "bounces" / "dev"
SISIMAI_425_MSG_S = 870


def main(argv: list[str]) -> int:
    """Time classification over the corpus; print figures, the last line JSON."""
    rounds = int(argv[argv.index("--rounds") + 1]) if "--rounds" in argv else 5
    args = [a for a in argv[1:] if not a.startswith("--") and a != str(rounds)]
    corpus = Path(args[0]) if args else DEFAULT
    if not (corpus / "eml").is_dir():
        print(f"corpus not found at {corpus}; nothing to measure")
        print(json.dumps({"skipped": True}))
        return 0
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    messages = [p.read_bytes() for p in sorted((corpus / "eml").iterdir())]
    for raw in messages[:50]:  # warm-up: imports, regex compilation
        classify(raw)
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        for raw in messages:
            classify(raw)
        rates.append(len(messages) / (time.perf_counter() - start))
    median = statistics.median(rates)
    print(f"messages            {len(messages)}")
    print(f"rounds              {rounds}")
    print(f"median msg/s        {median:.0f}  (Sisimai 4.25: ~{SISIMAI_425_MSG_S})")
    print(json.dumps({"messages": len(messages), "rounds": rounds,
                      "msg_per_s_median": round(median, 1),
                      "msg_per_s_best": round(max(rates), 1),
                      "vs_sisimai_4_25": round(median / SISIMAI_425_MSG_S, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
