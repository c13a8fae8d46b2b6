"""Extraction quality and CPU on both evaluation sets: plain trafilatura vs copydesk, same run.

Usage: .venv/bin/python benchmarks/bench_extract.py [--limit N] [--sets fundus,trafilatura-eval]
           [--workers 2] [--speed-pages 200] [--no-speed] [--no-profile]

Reads ../shared/eval/{fundus,trafilatura-eval} (skips a set that is absent; COPYDESK_EVAL
overrides the folder). Scoring as ../shared/eval/README.md: fundus by 4-word shingles per
page (precision/recall averaged over pages), trafilatura-eval by snippets over all pages.

Contenders, each page run by all four *in the same process, in alternating order* so that
their CPU times compare even on a shared machine:
* plain trafilatura 2.3.1 ``extract(html, include_comments=False)`` (trafilatura-eval: the
  bytes and the URL, as its results file), and the same with ``fast=True``;
* copydesk ``extract_article`` with the default ``ExtractConfig()`` (the one the CLI and the
  pipeline run, ``copydesk_config()``), and with ``compare="always"`` (the other mode).
  copydesk gets the page as the pipeline does: a str (trafilatura-eval bytes decoded by the
  fetch stage's ``decode_html``) and the URL.

Then pages/s (wall clock) on 1 and 2 processes, plain in a ``multiprocessing.Pool`` and
copydesk on its ``ExtractPool``, and where copydesk's CPU goes, by step.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVAL = Path(os.environ.get("COPYDESK_EVAL", ROOT / ".." / "shared" / "eval"))
SETS = ("fundus", "trafilatura-eval")
CONTENDERS = ("plain", "plain fast", "copydesk", "copydesk always")
_W = re.compile(r"\w+")


def copydesk_config():
    """The configuration the benchmark measures as "copydesk": ExtractConfig's defaults, which
    ``copydesk extract`` and the pipeline run (tests/test_extract_one_config.py holds them equal)."""
    from copydesk.transforms.extract.core import ExtractConfig

    return ExtractConfig()


# --- scoring (../shared/eval/README.md) -----------------------------------------------------

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


def snippet_score(outputs: list[str], truths: list[dict]) -> tuple[float, float, float]:
    tp = fp = fn = 0
    for out, g in zip(outputs, truths):
        found = sum(s in out for s in g["with"])
        tp, fn = tp + found, fn + len(g["with"]) - found
        fp += sum(s in out for s in g["without"])
    P, R = tp / (tp + fp), tp / (tp + fn)
    return P, R, 2 * P * R / (P + R)


def score(name: str, outputs: list[str], truths: list) -> tuple[float, float, float]:
    if name == "fundus":
        return aggregate([page_score(o, t) for o, t in zip(outputs, truths)])
    return snippet_score(outputs, truths)


# --- pages ----------------------------------------------------------------------------------

def load_set(name: str, limit: int = 0) -> list[dict] | None:
    folder = EVAL / name
    if not (folder / "ground-truth.json").exists():
        return None
    from copydesk.transforms.fetch.charset import decode_html
    from copydesk.transforms.fetch.errors import FetchFailure

    gt = json.loads((folder / "ground-truth.json").read_text("utf-8"))
    pages = []
    for i in sorted(gt)[: limit or None]:
        raw = gzip.decompress((folder / "html" / f"{i}.html.gz").read_bytes())
        if name == "fundus":
            text = raw.decode("utf-8")
            pages.append({"id": i, "plain_input": text, "plain_url": None, "html": text, "url": gt[i]["url"],
                          "truth": gt[i]["articleBody"]})
        else:
            try:
                text = decode_html(raw)[0]
            except FetchFailure:
                text = raw.decode("utf-8", errors="replace")
            pages.append({"id": i, "plain_input": raw, "plain_url": gt[i]["url"], "html": text, "url": gt[i]["url"],
                          "truth": gt[i]})
    return pages


# --- the four contenders on one page, in one process ----------------------------------------

def _run_page(args) -> dict[str, tuple[str, float]]:
    import trafilatura

    from copydesk.transforms.extract.core import ExtractConfig, ExtractionError, extract_article

    k, plain_input, plain_url, html, url = args
    configs = {"copydesk": copydesk_config(), "copydesk always": ExtractConfig(compare="always")}
    order = CONTENDERS if k % 2 == 0 else CONTENDERS[::-1]
    out = {}
    for name in order:
        t = time.process_time()  # CPU time: robust to other work on a shared machine
        if name.startswith("plain"):
            text = trafilatura.extract(plain_input, url=plain_url, include_comments=False,
                                       fast=name == "plain fast") or ""
        else:
            try:
                text = extract_article(html, url, configs[name]).text
            except ExtractionError:
                text = ""
        out[name] = (text, time.process_time() - t)
    return out


def _plain_default(args) -> int:
    import trafilatura

    return len(trafilatura.extract(args[0], url=args[1], include_comments=False) or "")


def _stats(seconds: list[float]) -> str:
    s = sorted(seconds)
    return (f"{1000 * sum(s) / len(s):7.1f} {1000 * s[len(s) // 2]:7.1f} {1000 * s[int(0.9 * (len(s) - 1))]:7.1f}")


def quality_and_cpu(name: str, pages: list[dict], workers: int) -> dict[str, list[tuple[str, float]]]:
    from multiprocessing import get_context

    jobs = [(k, p["plain_input"], p["plain_url"], p["html"], p["url"]) for k, p in enumerate(pages)]
    with get_context("spawn").Pool(workers) as pool:
        pool.map(_run_page, jobs[:workers], chunksize=1)  # warm up: imports, stoplists
        rows = pool.map(_run_page, jobs, chunksize=4)
    runs = {c: [r[c] for r in rows] for c in CONTENDERS}
    truths = [p["truth"] for p in pages]
    print(f"\n== {name}: {len(pages)} pages, {workers} processes ==")
    print(f"{'':18} {'P':>7} {'R':>7} {'F1':>7}   CPU ms/page: {'mean':>7} {'median':>7} {'p90':>7}")
    for c in CONTENDERS:
        P, R, F = score(name, [o for o, _ in runs[c]], truths)
        print(f"{c:18} {P:7.4f} {R:7.4f} {F:7.4f}                {_stats([s for _, s in runs[c]])}")
    plain = sum(s for _, s in runs["plain"])
    for c in CONTENDERS[1:]:
        print(f"  {c} CPU / plain CPU: {sum(s for _, s in runs[c]) / plain:.2f}")
    return runs


def throughput(name: str, pages: list[dict], n: int, rounds: int = 3) -> None:
    """Wall-clock pages/s on 1 and 2 processes, plain and copydesk alternating, median of rounds."""
    from multiprocessing import get_context
    from statistics import median

    from copydesk.transforms.extract.pool import ExtractPool

    sample = pages[:n]
    plain_jobs = [(p["plain_input"], p["plain_url"]) for p in sample]
    ours_jobs = [(p["html"], p["url"]) for p in sample]
    print(f"  pages/s (wall clock, {len(sample)} pages of {name}, median of {rounds} alternating rounds):")
    for w in (1, 2):
        with get_context("spawn").Pool(w) as plain_pool, ExtractPool(copydesk_config(), workers=w) as ours_pool:
            plain_pool.map(_plain_default, plain_jobs[:2 * w])  # warm up: spawn, imports
            ours_pool.extract_many(ours_jobs[:2 * w])
            rates: dict[str, list[float]] = {"plain": [], "copydesk": []}
            for r in range(rounds):
                for who in (("plain", "copydesk") if r % 2 == 0 else ("copydesk", "plain")):
                    t = time.perf_counter()
                    if who == "plain":
                        plain_pool.map(_plain_default, plain_jobs, chunksize=2)
                    else:
                        ours_pool.extract_many(ours_jobs)
                    rates[who].append(len(sample) / (time.perf_counter() - t))
        print(f"    {w} process(es): plain {median(rates['plain']):6.1f}   copydesk {median(rates['copydesk']):6.1f}")


def profile(pages: list[dict]) -> None:
    """Where copydesk's CPU goes, by step (in-process, each step's own wrapper)."""
    import copydesk.transforms.extract.cascade as ca
    import copydesk.transforms.extract.stage as st

    spent: dict[str, float] = defaultdict(float)

    def wrap(mod, fname, label):
        f = getattr(mod, fname)

        def timed(*a, **k):
            t = time.process_time()
            try:
                result = f(*a, **k)
                compared.append(getattr(result, "compared", None))
                return result
            finally:
                spent[label] += time.process_time() - t
        setattr(mod, fname, timed)
        return f

    steps = [(st, "parse_page", "parse (once)"), (st, "read_metadata", "metadata"),
             (st, "page_language", "language + headlines"), (st, "page_headlines", "language + headlines"),
             (st, "prune_tree", "HTML pruning"), (st, "run_cascade", "trafilatura cascade"),
             (st, "_recover", "recovery (short bodies)"), (st, "detect_wire", "wire attribution"),
             (st, "clean_text", "post-cleaning"), (st, "clean_authors", "post-cleaning"),
             (ca, "compare_extraction", "  of which readability/justext comparison"),
             (ca, "looks_wrong", "  of which the check of the quick result"),
             (ca, "extract_content", "  of which the main extractor"),
             (ca, "_prepare_tree", "  of which tree cleaning + conversion")]
    originals = [(mod, fname, wrap(mod, fname, label)) for mod, fname, label in steps]
    total = 0.0
    compared: list = []
    try:
        for p in pages:
            t = time.process_time()
            try:
                st.extract_article(p["html"], p["url"], copydesk_config())
            except st.ExtractionError:
                pass
            total += time.process_time() - t
    finally:
        for mod, fname, f in originals:
            setattr(mod, fname, f)
    print(f"\n== where copydesk's CPU goes ({len(pages)} pages, {1000 * total / len(pages):.1f} ms/page; "
          f"the comparison ran in {sum(c is True for c in compared)} of {sum(c is not None for c in compared)} "
          f"cascade runs) ==")
    top = sorted(((k, v) for k, v in spent.items() if not k.startswith(" ")), key=lambda kv: -kv[1])
    for label, secs in top:
        print(f"  {label:44} {1000 * secs / len(pages):6.2f} ms/page  {100 * secs / total:5.1f}%")
        if label == "trafilatura cascade":
            for sub, sub_secs in sorted(((k, v) for k, v in spent.items() if k.startswith(" ")), key=lambda kv: -kv[1]):
                print(f"  {sub:44} {1000 * sub_secs / len(pages):6.2f} ms/page  {100 * sub_secs / total:5.1f}%")


def worst(pages: list[dict], outputs: list[str], n: int = 8) -> None:
    rows = []
    for p, out in zip(pages, outputs):
        pr, rc = page_score(out, p["truth"])
        f = 2 * pr * rc / (pr + rc) if pr and rc else 0.0
        rows.append((f, p["id"], pr or 0.0, rc or 0.0))
    print(f"\n  {n} worst fundus pages for copydesk (F1, P, R):")
    for f, i, pr, rc in sorted(rows)[:n]:
        print(f"    {i:36} {f:.3f} {pr:.3f} {rc:.3f}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=0, help="first N pages of each set")
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--speed-pages", type=int, default=120, help="pages per set for the pages/s runs")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--no-profile", action="store_true")
    a = ap.parse_args()
    loaded = {}
    for name in a.sets.split(","):
        pages = load_set(name, a.limit)
        if pages is None:
            print(f"{EVAL / name} not present: skipped")
            continue
        loaded[name] = pages
        runs = quality_and_cpu(name, pages, a.workers)
        if name == "fundus":
            worst(pages, [o for o, _ in runs["copydesk"]])
        if not a.no_speed:
            throughput(name, pages, a.speed_pages)
    if loaded and not a.no_profile:
        profile([p for pages in loaded.values() for p in pages[::5]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
