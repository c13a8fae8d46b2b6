"""Extraction quality and speed on the fundus pages: plain trafilatura vs copydesk, same run.

Usage: .venv/bin/python benchmarks/bench_extract.py [--limit N] [--no-speed]
Reads ../shared/eval/fundus (skips if absent). Scoring: ../shared/eval/README.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FUNDUS = ROOT / ".." / "shared" / "eval" / "fundus"
_W = re.compile(r"\w+")


def shingles(t: str) -> Counter:
    w = _W.findall(t or "")
    return Counter(tuple(w[i:i + 4]) for i in range(len(w) - 3))


def page_score(pred: str, truth: str) -> tuple[float | None, float | None]:
    p, t = shingles(pred), shingles(truth)
    tp = sum((p & t).values())
    fp, fn = sum(p.values()) - tp, sum(t.values()) - tp
    return (tp / (tp + fp) if tp + fp else None), (tp / (tp + fn) if tp + fn else None)


def aggregate(scores: list[tuple[float | None, float | None]]) -> tuple[float, float, float]:
    ps = [p for p, _ in scores if p is not None]
    rs = [r for _, r in scores if r is not None]
    P, R = sum(ps) / len(ps), sum(rs) / len(rs)
    return P, R, 2 * P * R / (P + R)


def _plain(args):
    import trafilatura

    html, fast = args
    t = time.process_time()  # CPU time: robust to other work on a shared machine
    out = trafilatura.extract(html, include_comments=False, fast=fast) or ""
    return out, time.process_time() - t


def _copydesk(args):
    from copydesk.transforms.extract.stage import ExtractConfig, ExtractionError, extract_article

    html, url, fast = args
    t = time.process_time()
    try:
        out = extract_article(html, url, ExtractConfig(fast=fast)).text
    except ExtractionError:
        out = ""
    return out, time.process_time() - t


def _clean_cost(args):
    """Time of trafilatura alone vs cleaning alone on its output vs HTML pruning (same page, same process)."""
    import trafilatura
    from trafilatura.utils import load_html

    from copydesk.transforms.extract.clean import clean_authors, clean_text
    from copydesk.transforms.extract.prune import page_headlines, prune_tree

    html, url = args
    clock = time.process_time
    t0 = clock()
    doc = trafilatura.bare_extraction(html, url=url, with_metadata=True, include_comments=False, as_dict=False)
    t1 = clock()
    if doc is not None and doc.text:
        authors, _ = clean_authors(doc.author or "")
        clean_text(doc.text, title=doc.title, authors=authors)
    t2 = clock()
    tree = load_html(html)  # trafilatura is then given the tree: it copies it instead of parsing
    t3 = clock()
    if tree is not None:
        prune_tree(tree)
        page_headlines(tree)
    return t1 - t0, t2 - t1, clock() - t3, t3 - t2


def worst_lines(pred: str, truth: str, n: int = 2) -> tuple[list[str], list[str]]:
    """Top leaked lines (extracted, not in truth) and missed lines (truth, not extracted)."""
    ts, ps = shingles(truth), shingles(pred)

    def off(lines, ref):
        scored = []
        for ln in lines:
            s = shingles(ln)
            bad = sum((s - ref).values())
            if bad:
                scored.append((bad, ln.strip()[:110]))
        return [ln for _, ln in sorted(scored, reverse=True)[:n]]

    return off(pred.split("\n"), ts), off(truth.split("\n"), ps)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    if not (FUNDUS / "ground-truth.json").exists():
        print("../shared/eval/fundus not present: skipped")
        return 0
    from multiprocessing import get_context

    from copydesk.transforms.extract.pool import ExtractFailure, ExtractPool

    gt = json.loads((FUNDUS / "ground-truth.json").read_text("utf-8"))
    ids = sorted(gt)[: a.limit or None]
    htmls = [gzip.decompress((FUNDUS / "html" / f"{i}.html.gz").read_bytes()).decode("utf-8") for i in ids]
    urls = [gt[i]["url"] for i in ids]
    truths = [gt[i]["articleBody"] for i in ids]
    print(f"{len(ids)} fundus pages, {a.workers} processes\n")

    runs: dict[str, list[tuple[str, float]]] = {}
    with get_context("spawn").Pool(a.workers) as pool:
        runs["plain trafilatura"] = pool.map(_plain, [(h, False) for h in htmls], chunksize=4)
        runs["plain trafilatura fast=True"] = pool.map(_plain, [(h, True) for h in htmls], chunksize=4)
        runs["copydesk"] = pool.map(_copydesk, [(h, u, False) for h, u in zip(htmls, urls)], chunksize=4)
        runs["copydesk fast=True"] = pool.map(_copydesk, [(h, u, True) for h, u in zip(htmls, urls)], chunksize=4)
        costs = pool.map(_clean_cost, list(zip(htmls, urls)), chunksize=4) if not a.no_speed else []

    print(f"{'quality':32} {'P':>7} {'R':>7} {'F1':>7}   {'pages/s/core (CPU time)':>24}")
    per_page = {}
    for name, res in runs.items():
        scores = [page_score(o, t) for (o, _), t in zip(res, truths)]
        per_page[name] = scores
        P, R, F = aggregate(scores)
        secs = sum(s for _, s in res)
        print(f"{name:32} {P:7.4f} {R:7.4f} {F:7.4f}   {len(res) / secs:24.1f}")
    if costs:
        traf, clean, prune, parse = (sum(c[k] for c in costs) for k in range(4))
        print(f"\npost-cleaning cost: {100 * clean / traf:.1f}% of trafilatura time "
              f"({1000 * clean / len(costs):.2f} ms vs {1000 * traf / len(costs):.1f} ms a page)")
        print(f"HTML pruning cost: {100 * prune / traf:.1f}% of trafilatura time "
              f"({1000 * prune / len(costs):.2f} ms a page; the parse before it, {1000 * parse / len(costs):.2f} ms, "
              f"replaces trafilatura's own)")

    print("\nten worst copydesk pages (by F1):")
    rows = []
    for k, (i, (p, r)) in enumerate(zip(ids, per_page["copydesk"])):
        f = 2 * p * r / (p + r) if p and r else 0.0
        rows.append((f, k, i, p, r))
    for f, k, i, p, r in sorted(rows)[:10]:
        leaked, missed = worst_lines(runs["copydesk"][k][0], truths[k])
        print(f"  {i:34} F1 {f:.3f} P {p or 0:.3f} R {r or 0:.3f}")
        for ln in leaked:
            print(f"      leaked: {ln}")
        for ln in missed:
            print(f"      missed: {ln}")

    if not a.no_speed:
        print("\npool throughput (same pages, copydesk extraction, wall clock):")
        for w in (1, 2):
            with ExtractPool(workers=w) as pool:
                pool.extract_many([(htmls[0], urls[0])] * w)  # warm up (spawn + imports)
                t = time.perf_counter()
                res = pool.extract_many(list(zip(htmls, urls)))
                dt = time.perf_counter() - t
            fails = sum(isinstance(r, ExtractFailure) for r in res)
            print(f"  workers={w}: {len(res) / dt:6.1f} pages/s  ({dt:.1f} s, {fails} failures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
