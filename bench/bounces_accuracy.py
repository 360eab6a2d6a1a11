"""Bounce classification accuracy over the shared dev corpus, scored by the corpus's score.py.

usage: python bench/bounces_accuracy.py [CORPUS_DIR] [--preds OUT.jsonl]

Runs :func:`bounces.classify.classify` over every message in ``CORPUS_DIR/eml`` (default
``../shared/corpus/bounces/dev``), writes one JSON line per (file, recipient) in the form
score.py reads, scores it against ``labels.jsonl`` and prints the figures; the last line is a
JSON object. Exits 0 with a message when the corpus is not present (it is never copied here).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bounces.classify import classify  # noqa: E402

DEFAULT = ROOT.parent / "shared" / "corpus" / "bounces" / "dev"


def predictions(eml_dir: Path) -> list[dict[str, object]]:
    """One prediction row per (file, recipient), in the scorer's field names."""
    rows: list[dict[str, object]] = []
    for path in sorted(eml_dir.iterdir()):
        for res in classify(path.read_bytes()):
            rows.append({"file": path.name, "kind": res.kind, "recipient": res.recipient,
                         "bounce_type": res.bounce_type, "reason": res.reason,
                         "status": res.status, "diagnostic": res.diagnostic[:200]})
    return rows


def main(argv: list[str]) -> int:
    """Classify, score, print; the last line is the JSON figures."""
    out = Path(argv[argv.index("--preds") + 1]) if "--preds" in argv else None
    args = [a for a in argv[1:] if not a.startswith("--") and (out is None or a != str(out))]
    corpus = Path(args[0]) if args else DEFAULT
    scorer = corpus.parent.parent / "score.py"
    if not (corpus / "eml").is_dir() or not (corpus / "labels.jsonl").is_file():
        print(f"corpus not found at {corpus}; nothing to measure")
        print(json.dumps({"skipped": True}))
        return 0
    rows = predictions(corpus / "eml")
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows))
        preds = Path(fh.name)
    if out is not None:
        out.write_text(preds.read_text())
    done = subprocess.run([sys.executable, str(scorer), str(corpus / "labels.jsonl"),
                           str(preds), "--json"], capture_output=True, text=True, check=True)
    preds.unlink()
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    for key, value in figures.items():
        print(f"{key:28} {value}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
