"""Benchmarks of the de-duplication stage; prints figures, asserts nothing.

Parts (``--part quality,core,beam``; all by default):

quality  pairwise precision/recall of the clustering on syndicated variants of real article
         bodies (:mod:`benchmarks.syndicate`), a threshold sweep, the confusion by variant
         kind, and the same run in shuffled arrival orders (cluster-id agreement).
core     ``--records`` (default 1,000,000) records through the pure core (signature + LSH
         index with horizon, :class:`DedupIndex`) on a synthetic event-time clock: per-record
         cost and RSS at intervals while the horizon fills and then slides.
beam     ``--beam-records`` (default 20,000) records through the Beam ``Deduplicate``
         transform on the FnApiRunner: end-to-end records/s, and the stage alone (minus a
         pass-through pipeline over the same records). State cache off as in the job
         (``--state-cache`` to keep Beam's default).

Run: ``.venv/bin/python benchmarks/bench_dedup.py [--records N] [--part core]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import resource
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from syndicate import NEGATIVE_KINDS, POSITIVE_KINDS, Variant, generate, load_bodies  # noqa: E402

from copydesk.transforms.dedup.core import DedupConfig, DedupIndex, Member, is_agency_domain  # noqa: E402
from copydesk.transforms.dedup.minhash import content_hash, minhasher, similarity, tokens, shingle_hashes  # noqa: E402


def rss_mb() -> float:
    """Current resident set size in MiB (from /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- quality ---------------------------------------------------------------------------------


def _members(vs: list[Variant], cfg: DedupConfig) -> dict[str, Member]:
    mh = minhasher(cfg.num_perm, cfg.seed)
    out = {}
    for v in vs:
        toks = tokens(v.text)
        sig = mh.signature(shingle_hashes(toks, cfg.shingle_size)) if len(toks) >= cfg.min_words else b""
        out[v.doc_id] = Member(
            token=v.doc_id,
            id="u:" + v.doc_id,
            stamp=0,
            ts=1.7e9 + v.offset_s,
            sig=sig,
            domain=v.domain,
            agency=is_agency_domain(v.domain, cfg.agency_domains),
            content_hash=content_hash(v.text),
        )
    return out


def _run(order: list[Variant], base: dict[str, Member], cfg: DedupConfig) -> dict[str, str]:
    idx = DedupIndex(cfg)
    out = {}
    for i, v in enumerate(order):
        m = base[v.doc_id]._replace(stamp=i)
        out[v.doc_id] = idx.process(m).cluster_id
    return out


def _pairs(vs: list[Variant], pred: dict[str, str]) -> tuple[int, int, int]:
    """(true positives, predicted pairs, true pairs) over all unordered pairs."""

    def n2(c: int) -> int:
        return c * (c - 1) // 2

    truth = Counter(v.story for v in vs)
    predc = Counter(pred[v.doc_id] for v in vs)
    both = Counter((v.story, pred[v.doc_id]) for v in vs)
    return sum(n2(c) for c in both.values()), sum(n2(c) for c in predc.values()), sum(n2(c) for c in truth.values())


def bench_quality(args: argparse.Namespace) -> DedupConfig | None:
    bodies = load_bodies()
    if not bodies:
        print("quality: fundus ground truth not found, skipped")
        return None
    vs = list(generate(bodies, seed=7, copies_per_kind=args.copies))
    by_time = sorted(vs, key=lambda v: (v.offset_s, v.doc_id))
    print(f"quality: {len(bodies)} stories, {len(vs)} documents "
          f"({len(POSITIVE_KINDS)} positive kinds x{args.copies}, {len(NEGATIVE_KINDS)} negative kinds)")
    cfg0 = DedupConfig()
    t0 = time.perf_counter()
    base = _members(vs, cfg0)
    print(f"  signatures: {(time.perf_counter() - t0) / len(vs) * 1e3:.3f} ms/doc (tokenise + shingle + MinHash)")

    # similarity to the original, per kind
    orig = {v.story: base[v.doc_id] for v in vs if v.kind == "original"}
    sims: dict[str, list[float]] = defaultdict(list)
    for v in vs:
        if v.kind != "original":
            sims[v.kind].append(similarity(base[v.doc_id].sig, orig[v.source_story].sig))
    print("  estimated Jaccard to the original, by kind: min / p05 / median / max")
    for k in POSITIVE_KINDS + NEGATIVE_KINDS:
        a = np.array(sims[k])
        print(f"    {k:13s} {a.min():.2f} / {np.quantile(a, 0.05):.2f} / {np.median(a):.2f} / {a.max():.2f}")

    print("  threshold sweep (bands=32 x rows=4, arrival in publication order):")
    print("    threshold  precision  recall   pairs(tp/pred/true)")
    best = None
    for th in (0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8):
        cfg = dataclasses.replace(cfg0, threshold=th)
        pred = _run(by_time, base, cfg)
        tp, pp, tt = _pairs(vs, pred)
        p, r = tp / pp if pp else 1.0, tp / tt
        print(f"    {th:9.2f}  {p:9.4f}  {r:7.4f}   {tp}/{pp}/{tt}")
    cfg = dataclasses.replace(cfg0, threshold=args.threshold or cfg0.threshold)
    pred = _run(by_time, base, cfg)
    tp, pp, tt = _pairs(vs, pred)
    print(f"  chosen threshold {cfg.threshold}: pairwise precision {tp / pp:.4f}, recall {tp / tt:.4f}")

    # confusion by kind: joined the original's cluster?
    print("  confusion by kind (joined the original's cluster / total):")
    orig_cluster = {v.story: pred[v.doc_id] for v in vs if v.kind == "original"}
    for k in POSITIVE_KINDS + NEGATIVE_KINDS:
        n = [v for v in vs if v.kind == k]
        joined = sum(pred[v.doc_id] == orig_cluster[v.source_story] for v in n)
        tag = "recall" if k in POSITIVE_KINDS else "FALSE MERGES"
        print(f"    {k:13s} {joined:4d}/{len(n):4d}  ({tag})")

    # shuffled arrival orders
    agree_part = agree_id = 0
    runs = 5
    rng = random.Random(3)
    ref_part = {frozenset(d for d in pred if pred[d] == c) for c in set(pred.values())}
    for _ in range(runs):
        order = list(vs)
        rng.shuffle(order)
        p2 = _run(order, base, cfg)
        tp, pp, tt = _pairs(vs, p2)
        part = {frozenset(d for d in p2 if p2[d] == c) for c in set(p2.values())}
        same = len(ref_part & part)
        agree_part += same
        one_id = sum(len({p2[v.doc_id] for v in vs if v.story == s and v.kind in POSITIVE_KINDS + ("original",)}) == 1 for s in orig)
        agree_id += one_id
        print(f"  shuffled arrival: P {tp / pp:.4f} R {tp / tt:.4f}; clusters identical to publication order "
              f"{same}/{len(ref_part)}; stories whose copies all share one cluster_id {one_id}/{len(orig)}")
    return cfg


# --- core scale ------------------------------------------------------------------------------


def bench_core(args: argparse.Namespace) -> None:
    """``--records`` records through signature + index with a sliding horizon on a synthetic
    event-time clock (``--rate`` records per second, horizon = ``--horizon-records`` records).

    Texts: new stories are 400 tokens drawn from a 50,000-word vocabulary (distinct shingle
    sets, cheap to make); every ``--dup-every``-th record is a near copy of a recent story
    (10 words changed, another outlet). The timed part per record is shingle hashing +
    MinHash + lookups + decision + insert + horizon pruning; tokenising is excluded (it costs
    ~0.35 ms per 900-word body, see the quality part).
    """
    n = args.records
    cfg = DedupConfig(horizon_seconds=args.horizon_records / args.rate)
    mh = minhasher(cfg.num_perm, cfg.seed)
    rng = np.random.default_rng(5)
    vocab = np.array([f"w{i}" for i in range(50_000)], dtype=object)
    idx = DedupIndex(cfg)
    t_sig = t_idx = 0.0
    dup = matched = 0
    print(f"core: {n:,} records, horizon {cfg.horizon_seconds:.0f} s of synthetic time "
          f"= {args.horizon_records:,} records at {args.rate:g} records/s")
    print("   records  in-horizon  rss_MiB  us/record (last interval: sig + index)")
    step = max(1, n // 20)
    last_t = 0.0
    recent: list[list[str]] = []
    ring = 0
    base_rss = rss_mb()
    for i in range(n):
        ts = 1.7e9 + i / args.rate
        if recent and i % args.dup_every == 0:
            toks = list(recent[int(rng.integers(0, len(recent)))])
            for j in rng.integers(0, len(toks), 10):
                toks[j] = vocab[int(rng.integers(0, len(vocab)))]
            dup += 1
        else:
            toks = vocab[rng.integers(0, len(vocab), 400)].tolist()
            if len(recent) < 2000:
                recent.append(toks)
            else:
                recent[ring] = toks
                ring = (ring + 1) % 2000
        t0 = time.perf_counter()
        sig = mh.signature(shingle_hashes(toks, cfg.shingle_size))
        t1 = time.perf_counter()
        m = Member(f"t{i}", f"{i:032x}", i, ts, sig, f"d{i % 500}.example", i % 50 == 0, f"{i:032x}")
        d = idx.process(m)
        t2 = time.perf_counter()
        matched += d.matched > 0
        t_sig += t1 - t0
        t_idx += t2 - t1
        if (i + 1) % step == 0:
            tot = t_sig + t_idx
            print(f"  {i + 1:9,d}  {len(idx):10,d}  {rss_mb():7.0f}  {(tot - last_t) / step * 1e6:8.1f}", flush=True)
            last_t = tot
    print(f"  per record: signature {t_sig / n * 1e6:.1f} us + index {t_idx / n * 1e6:.1f} us "
          f"= {(t_sig + t_idx) / n * 1e3:.3f} ms; {dup:,} copies made, {matched:,} records matched")
    print(f"  RSS: start {base_rss:.0f} MiB, end {rss_mb():.0f} MiB, peak {peak_rss_mb():.0f} MiB, "
          f"for {len(idx):,} records inside the horizon "
          f"(~{(rss_mb() - base_rss) * 2**20 / max(1, len(idx)) / 1024:.1f} KiB per record)")


# --- beam ------------------------------------------------------------------------------------


def _beam_records(n: int) -> list:
    from copydesk.schemas.records import ArticleRecord, SourceRef

    bodies = load_bodies()
    texts = [b for _, _, b in bodies] or [" ".join(f"w{j}" for j in range(i, i + 300)) for i in range(200)]
    rng = random.Random(1)
    recs = []
    for i in range(n):
        words = texts[i % len(texts)].split()[:300]
        if i % 5:  # 4 of 5 are new stories
            for _ in range(6):
                words[rng.randrange(len(words))] = f"x{rng.randrange(10**6)}"
        recs.append(ArticleRecord(
            id=f"{i:032x}", url=f"https://d{i % 97}.example/{i}", canonical_url=f"https://d{i % 97}.example/{i}",
            final_url=f"https://d{i % 97}.example/{i}", source_domain=f"d{i % 97}.example", text=" ".join(words),
            fingerprint="x", content_hash=f"{i:032x}", fetched_at=f"2025-01-01T00:{(i // 60) % 60:02d}:{i % 60:02d}+00:00",
            ref=SourceRef("t", 0, i)))
    return recs


def _beam_seeds(n: int, cfg: DedupConfig, stale: int = 0) -> list[dict]:
    """``n`` fingerprint entries (other ids, same bodies as the first records, an hour earlier)
    and ``stale`` more a month earlier (outside the horizon: dropped before expansion)."""
    import dataclasses as dc

    from copydesk.transforms.dedup.stage import fingerprint_entry, signature_for
    from copydesk.transforms.dedup.minhash import encode_signature

    out = []
    for i, r in enumerate(_beam_records(n + stale)):
        day = "2024-12-31T23" if i < n else "2024-12-01T23"
        s = dc.replace(r, id=f"seed{i:028x}", content_hash=f"seed{i:028x}", fingerprint=encode_signature(
            signature_for(r.text, cfg)), fetched_at=r.fetched_at.replace("2025-01-01T00", day))
        out.append(fingerprint_entry(s, cfg))
    return out


def _beam_run(recs: list, cfg: DedupConfig | None, seeds: list[dict] | None = None) -> tuple[float, float, int]:
    """(wall s, CPU s, -1) of Create -> [Deduplicate] -> Count on the FnApiRunner."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from copydesk.transforms.dedup.stage import Deduplicate

    counts: dict[str, int] = {}  # the Map runs on a pickled copy: not read back
    t0, c0 = time.perf_counter(), time.process_time()
    with beam.Pipeline(runner="apache_beam.runners.portability.fn_api_runner.FnApiRunner",
                       options=PipelineOptions([])) as p:
        pc = p | beam.Create(recs, reshuffle=False)
        seed = p | "Seeds" >> beam.Create(seeds) if seeds is not None else None
        out = (pc | Deduplicate(cfg, seed=seed))[0] if cfg is not None else pc | "Pass" >> beam.Map(lambda r: r)
        _ = out | "c" >> beam.combiners.Count.Globally() | beam.Map(lambda c: counts.__setitem__("out", c))
    return time.perf_counter() - t0, time.process_time() - c0, counts.get("out", -1)


def bench_beam(args: argparse.Namespace) -> None:
    """Records through ``Deduplicate`` on the FnApiRunner. By default with the state cache off,
    as the job runs it (``pipelines.pipeline.configure_local_runner``); ``--state-cache`` keeps
    Beam's default 100 MB cache (whose per-access object sizing dominates then). The same
    records through a pass-through pipeline (Create -> Map -> Count) are timed too and
    subtracted: the rest is the cost of the stage itself."""
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    if not args.state_cache:
        worker_handlers.STATE_CACHE_SIZE_MB = 0
    n = args.beam_records
    recs = _beam_records(n)
    cfg = DedupConfig()
    seeds = _beam_seeds(args.beam_seeds, cfg, args.beam_stale_seeds) if args.beam_seeds >= 0 else None
    _beam_run(recs[:50], cfg, seeds)  # warm-up: imports, numpy, first pipeline
    bw, bc, _ = _beam_run(recs, None)
    dw, dc, _ = _beam_run(recs, cfg, seeds)
    sw, sc = dw - bw, dc - bc
    print(f"beam: {n:,} records through Deduplicate on FnApiRunner (state cache "
          f"{'on' if args.state_cache else 'off'}, {'no seed input' if seeds is None else f'{len(seeds):,} seeds'}): {dw:.1f} s wall ({dc:.1f} s CPU) = {n / dw:,.0f} records/s; "
          f"pass-through pipeline {bw:.1f} s ({bc:.1f} s CPU); stage alone {sw:.1f} s = {n / sw:,.0f} records/s, "
          f"{1000 * sw / n:.2f} ms/record ({1000 * sc / n:.2f} ms CPU); "
          f"{cfg.bands + 3} keyed elements per record; peak RSS {peak_rss_mb():.0f} MiB")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", default="quality,core,beam")
    ap.add_argument("--records", type=int, default=1_000_000, help="records for the core benchmark")
    ap.add_argument("--horizon-records", type=int, default=200_000, help="records inside the horizon (core)")
    ap.add_argument("--rate", type=float, default=10.0, help="synthetic records per second of event time (core)")
    ap.add_argument("--dup-every", type=int, default=4, help="every n-th record is a copy (core)")
    ap.add_argument("--beam-records", type=int, default=20_000)
    ap.add_argument("--state-cache", action="store_true",
                    help="beam: keep Beam's state cache (the job turns it off on the FnApiRunner)")
    ap.add_argument("--beam-stale-seeds", type=int, default=0,
                    help="beam: with --beam-seeds, N more entries a month old (older than the horizon)")
    ap.add_argument("--beam-seeds", type=int, default=-1,
                    help="beam: pass N fingerprint entries as seed= (0: an empty seed input, as the job with "
                         "an empty --fingerprint-topic; default: no seed input)")
    ap.add_argument("--copies", type=int, default=1, help="copies per positive kind per story (quality)")
    ap.add_argument("--threshold", type=float, default=None)
    args = ap.parse_args(argv)
    parts = set(args.part.split(","))
    if "quality" in parts:
        bench_quality(args)
    if "core" in parts:
        bench_core(args)
    if "beam" in parts:
        bench_beam(args)


if __name__ == "__main__":
    main()
