"""Wire attribution precision/recall on the hand-labelled fundus pages.

Usage: .venv/bin/python benchmarks/bench_wire.py
Labels: benchmarks/wire_labels.json; HTML from ../shared/eval/fundus (skips if absent).
Micro precision/recall over (page, agency) pairs; every disagreement is listed.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FUNDUS = ROOT / ".." / "shared" / "eval" / "fundus"


def main() -> int:
    if not (FUNDUS / "ground-truth.json").exists():
        print("../shared/eval/fundus not present: skipped")
        return 0
    from copydesk.transforms.extract.pool import ExtractFailure, ExtractPool

    labels = json.loads((ROOT / "benchmarks" / "wire_labels.json").read_text("utf-8"))["labels"]
    gt = json.loads((FUNDUS / "ground-truth.json").read_text("utf-8"))
    ids = sorted(labels)
    pages = [(gzip.decompress((FUNDUS / "html" / f"{i}.html.gz").read_bytes()).decode("utf-8"), gt[i]["url"])
             for i in ids]
    with ExtractPool() as pool:
        res = pool.extract_many(pages)
    tp = fp = fn = 0
    errors = []
    for i, r in zip(ids, res):
        pred = set() if isinstance(r, ExtractFailure) else set(r.wire.agencies)
        gold = set(labels[i])
        tp, fp, fn = tp + len(pred & gold), fp + len(pred - gold), fn + len(gold - pred)
        if pred != gold:
            printed = None if isinstance(r, ExtractFailure) else r.wire.attribution
            errors.append(f"  {i:34} predicted {sorted(pred)} labelled {sorted(gold)}  ({printed!r})")
    P = tp / (tp + fp) if tp + fp else 1.0
    R = tp / (tp + fn) if tp + fn else 1.0
    pos = sum(1 for v in labels.values() if v)
    print(f"{len(ids)} pages, {pos} labelled as wire copy, {tp + fn} (page, agency) pairs")
    print(f"precision {P:.3f}  recall {R:.3f}  (tp {tp}, fp {fp}, fn {fn})")
    print("errors:" if errors else "no errors")
    print("\n".join(errors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
