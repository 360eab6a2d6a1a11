"""Bounce classification accuracy over the shared dev corpus, scored by the corpus's score.py.

usage: python bench/bounces_accuracy.py [CORPUS_DIR] [--preds OUT.jsonl]

Runs :func:`bounces.classify.classify` over every message in ``CORPUS_DIR/eml`` (default: the
first ``shared/corpus/bounces/dev`` found beside or above this checkout), writes one JSON line
per (file, recipient) in the form score.py reads, and scores it against ``labels.jsonl``:

* overall, as score.py reports it;
* per source family (the file-name prefix: ``soe-bsd``, ``soe-dos``, ``soe-err``, ``flufl`` ...),
  each family scored alone. The rules are written by hand, so "leave one source out" cannot be
  re-trained away: instead bench/README.md records which families were looked at while the rules
  were written. A family nobody looked at scores as held-out data does; the README keeps the
  per-family table and says which figures are honest leave-out figures.

The last line is a JSON object (overall figures, plus ``by_family``). Exits 0 with a message when
the corpus is not present (it is never copied into the repository).
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


def default_corpus() -> Path:
    """The dev corpus next to this checkout or one of its parents (worktrees live deeper)."""
    for base in (ROOT, *ROOT.parents):
        candidate = base / "shared" / "corpus" / "bounces" / "dev"
        if candidate.is_dir():
            return candidate
    return ROOT.parent / "shared" / "corpus" / "bounces" / "dev"


def family(name: str) -> str:
    """The source family of a corpus file: ``flufl``, or ``soe-`` plus its set-of-emails folder."""
    parts = name.split("-")
    return parts[0] if parts[0] != "soe" else "-".join(parts[:2])


def predictions(eml_dir: Path) -> list[dict[str, object]]:
    """One prediction row per (file, recipient), in the scorer's field names."""
    rows: list[dict[str, object]] = []
    for path in sorted(eml_dir.iterdir()):
        for res in classify(path.read_bytes()):
            rows.append(
                {
                    "file": path.name,
                    "kind": res.kind,
                    "recipient": res.recipient,
                    "bounce_type": res.bounce_type,
                    "reason": res.reason,
                    "status": res.status,
                    "diagnostic": res.diagnostic[:200],
                }
            )
    return rows


def _score(scorer: Path, labels: list[str], rows: list[dict[str, object]]) -> dict[str, object]:
    """Run score.py over the given label lines and prediction rows."""
    with tempfile.TemporaryDirectory() as tmp:
        label_file, pred_file = Path(tmp) / "labels.jsonl", Path(tmp) / "preds.jsonl"
        label_file.write_text("".join(labels))
        pred_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
        done = subprocess.run(
            [sys.executable, str(scorer), str(label_file), str(pred_file), "--json"],
            capture_output=True,
            text=True,
            check=True,
        )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str]) -> int:
    """Classify, score overall and per family, print; the last line is the JSON figures."""
    out = Path(argv[argv.index("--preds") + 1]) if "--preds" in argv else None
    args = [a for a in argv[1:] if not a.startswith("--") and (out is None or a != str(out))]
    corpus = Path(args[0]) if args else default_corpus()
    scorer = corpus.parent.parent / "score.py"
    if not (corpus / "eml").is_dir() or not (corpus / "labels.jsonl").is_file():
        print(f"corpus not found at {corpus}; nothing to measure")
        print(json.dumps({"skipped": True}))
        return 0
    rows = predictions(corpus / "eml")
    if out is not None:
        out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    labels = (corpus / "labels.jsonl").read_text().splitlines(keepends=True)
    figures = _score(scorer, labels, rows)
    for key, value in figures.items():
        print(f"{key:28} {value}")
    by_family: dict[str, dict[str, object]] = {}
    families = sorted({family(json.loads(line)["file"]) for line in labels if line.strip()})
    print(f"\n{'family':10} {'records':>7} {'rcpt':>6} {'reason':>6} {'hard':>6} {'status':>6}")
    for fam in families:
        fam_labels = [
            line for line in labels if line.strip() and family(json.loads(line)["file"]) == fam
        ]
        fam_rows = [r for r in rows if family(str(r["file"])) == fam]
        scored = _score(scorer, fam_labels, fam_rows)
        if not scored["records"]:
            continue
        by_family[fam] = scored
        print(
            f"{fam:10} {scored['records']:>7} {scored['recipient_found_pct']:>6} "
            f"{scored['reason_agree_pct']:>6} {scored['hard_soft_agree_pct']:>6} "
            f"{scored['status_agree_pct']:>6}"
        )
    figures["by_family"] = by_family
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
