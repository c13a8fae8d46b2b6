"""Benchmarks of the de-duplication stage; prints figures, asserts nothing.

Parts (``--part quality,core,beam``; all by default):

quality  labelled pairs of syndicated copies and hard negatives made from real article bodies
         (:mod:`benchmarks.syndicate`), scored per pair, each pair on its own: what the rule
         sees by kind, a sweep of each parameter on one half of the stories, the confusion
         table by kind at the chosen rule on the other half and on all, the previous rule on
         the same pairs, and the whole stream in three arrival orders (chains through roundups).
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
import os
from typing import Any
import random
import resource
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from syndicate import NEGATIVE_KINDS, POSITIVE_KINDS, VERSION_KINDS, Variant, generate, load_bodies, pairs  # noqa: E402

from copydesk.transforms.dedup.core import DedupConfig, DedupIndex, Member, is_agency_domain  # noqa: E402
from copydesk.transforms.dedup.minhash import (  # noqa: E402
    content_hash,
    distinct,
    entity_containment,
    features,
    minhasher,
    overlap,
    shingle_hashes,
    similarity,
    sketch,
)


def rss_mb() -> float:
    """Current resident set size in MiB (from /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- quality ---------------------------------------------------------------------------------


def _members(vs: list[Variant], cfg: DedupConfig) -> dict[str, Member]:
    out = {}
    for v in vs:
        # the high bits of 64 minima: enough for every band count the sweep tries
        sig, nsh, ents, hi, lead = sketch(v.text, cfg.shingle_size, cfg.min_words, cfg.num_perm, cfg.seed, cfg.entity_k,
                                          64)
        out[v.doc_id] = Member(
            token=v.doc_id,
            id="u:" + v.doc_id,
            stamp=0,
            ts=1.7e9 + v.offset_s,
            sig=sig,
            domain=v.domain,
            agency=is_agency_domain(v.domain, cfg.agency_domains),
            content_hash=content_hash(v.text),
            nsh=nsh,
            ents=ents,
            hi=hi,
            lead=lead,
        )
    return out


def _pair_matches(prs: list[tuple[str, str, str, bool]], base: dict[str, Member], cfg: DedupConfig) -> list[bool]:
    """Each pair on its own: the partner alone in a fresh index, then the document; True when
    the document joins the partner's cluster (LSH candidate and rule, as in the stream)."""
    out = []
    for _kind, a, b, _pos in prs:
        idx = DedupIndex(cfg, capacity=16)
        ma, mb = base[a], base[b]
        ts = max(ma.ts, mb.ts)
        idx.process(ma._replace(stamp=0, ts=ts))
        out.append(idx.process(mb._replace(stamp=1, ts=ts)).cluster_id == ma.id)
    return out


def _confusion(prs: list[tuple[str, str, str, bool]], got: list[bool]) -> dict[str, tuple[int, int]]:
    """kind -> (matched, pairs)."""
    c: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for (kind, _a, _b, _pos), g in zip(prs, got):
        c[kind][0] += g
        c[kind][1] += 1
    return {k: (v[0], v[1]) for k, v in c.items()}


def _score(conf: dict[str, tuple[int, int]]) -> tuple[float, float, float]:
    """(lowest recall over copy kinds, lowest recall over version kinds, highest false-merge
    rate over negative kinds)."""
    rec = [conf[k][0] / conf[k][1] for k in POSITIVE_KINDS if k in conf and k not in VERSION_KINDS]
    ver = [conf[k][0] / conf[k][1] for k in VERSION_KINDS if k in conf]
    neg = [conf[k][0] / conf[k][1] for k in NEGATIVE_KINDS if k in conf]
    return min(rec), min(ver), max(neg)


def _print_confusion(title: str, conf: dict[str, tuple[int, int]]) -> None:
    print(f"  {title}")
    print("    kind              matched / pairs   rate     (target)")
    tp = fn = fp = 0
    for k in POSITIVE_KINDS + NEGATIVE_KINDS:
        if k not in conf:
            continue
        m, n = conf[k]
        if k in POSITIVE_KINDS:
            tp, fn = tp + m, fn + n - m
            tgt = "recall >= 0.80" if k in VERSION_KINDS else "recall >= 0.95"
        else:
            fp += m
            tgt = "false merges <= 0.5%"
        print(f"    {k:16s} {m:6d} / {n:5d}   {m / n:6.3f}   ({tgt})")
    print(f"    all pairs: precision {tp / max(1, tp + fp):.4f}, recall {tp / max(1, tp + fn):.4f} "
          f"(tp {tp}, fn {fn}, fp {fp})")


def _stream(vs: list[Variant], base: dict[str, Member], cfg: DedupConfig, order: list[Variant]) -> tuple[int, int, int]:
    """All documents through one index in ``order``: (clusters holding two stories'
    originals, negatives in their source story's cluster, positives not in their partner's)."""
    idx = DedupIndex(cfg)
    cid = {}
    for i, v in enumerate(order):
        cid[v.doc_id] = idx.process(base[v.doc_id]._replace(stamp=i)).cluster_id
    per: dict[str, set[str]] = defaultdict(set)
    for v in vs:
        if v.kind == "original":
            per[cid[v.doc_id]].add(v.story)
    chains = sum(len(s) > 1 for s in per.values())
    neg = sum(cid[v.doc_id] == cid[f"{v.source_story}-orig"] for v in vs if v.kind in NEGATIVE_KINDS)
    miss = sum(cid[v.doc_id] != cid[v.partner] for v in vs if v.positive)
    return chains, neg, miss


SWEEP = (
    ("threshold", (0.4, 0.45, 0.5, 0.55, 0.6)),
    ("same_site_threshold", (0.5, 0.55, 0.6, 0.65, 0.7)),
    ("containment", (0.65, 0.7, 0.75, 0.8, 0.85, 0.9)),
    ("min_cover", (0.1, 0.15, 0.2, 0.25, 0.3)),
    ("version_overlap", (0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5)),
    ("version_entities", (0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 1.01)),
    ("version_sum", (0.0, 1.3, 1.4, 1.5)),
    ("version_lead", (0.7, 0.8, 0.85, 0.9, 0.95, 1.0, 1.01)),
    ("roundup_cover", (0.8, 0.85, 0.9, 0.95, 1.01)),
    ("roundup_extra", (0.05, 0.1, 0.15, 0.2)),
    ("roundup_share", (0.3, 0.4, 0.5, 0.6)),
    ("expansion_lead", (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)),
    ("bands", (16, 24, 32, 48, 64)),
)


def bench_quality(args: argparse.Namespace) -> DedupConfig | None:
    bodies = load_bodies()
    if not bodies:
        print("quality: fundus ground truth not found, skipped")
        return None
    vs = list(generate(bodies, seed=7))
    prs = pairs(vs)
    n_st = sum(v.kind == "original" for v in vs)
    # stories split in two halves: the rule's parameters are chosen on the first ("tune") and
    # reported on the second ("test"), whose pairs the sweep never saw
    half = {v.story.split("-")[0] for v in vs if v.kind == "original" and int(v.story[1:5]) % 2 == 0}
    tune = [p for p in prs if p[2].split("-")[0] in half]
    test = [p for p in prs if p[2].split("-")[0] not in half]
    print(f"quality: {n_st} stories from {len(bodies)} fundus bodies, {len(vs)} documents, {len(prs)} labelled pairs "
          f"({len(POSITIVE_KINDS)} positive kinds, {len(NEGATIVE_KINDS)} negative kinds); tune half {len(tune)} pairs, "
          f"test half {len(test)} pairs")
    cfg0 = DedupConfig()
    t0 = time.perf_counter()
    base = _members(vs, cfg0)
    print(f"  features: {(time.perf_counter() - t0) / len(vs) * 1e3:.3f} ms/doc "
          "(tokenise + shingle + MinHash + entities)")

    # what the rule sees, per kind
    print("  per pair, by kind: estimated Jaccard J, share of the smaller body covered (cs), of the larger (cl), "
          "entity containment (ent): p02 / median / max")
    feats: dict[str, list[tuple[float, ...]]] = defaultdict(list)
    for kind, a, b, _pos in prs:
        ma, mb = base[a], base[b]
        j = similarity(ma.sig, mb.sig)
        cs, cl = overlap(j, ma.nsh, mb.nsh)
        feats[kind].append((j, cs, cl, entity_containment(ma.ents, mb.ents, cfg0.entity_k)))
    for k in POSITIVE_KINDS + NEGATIVE_KINDS:
        a = np.array(feats[k])
        cols = "  ".join(f"{nm} {np.quantile(a[:, i], 0.02):.2f}/{np.median(a[:, i]):.2f}/{a[:, i].max():.2f}"
                         for i, nm in enumerate(("J", "cs", "cl", "ent")))
        print(f"    {k:16s} n={len(a):4d}  {cols}")

    print("  sweep on the tune half (one parameter at a time around the chosen rule): lowest copy recall, "
          "lowest version recall, highest false-merge rate")
    for name, values in SWEEP:
        row = []
        for val in values:
            cfg = dataclasses.replace(cfg0, **{name: val})
            r, v, f = _score(_confusion(tune, _pair_matches(tune, base, cfg)))
            mark = "*" if val == getattr(cfg0, name) else " "
            row.append(f"{val:g}{mark} {r:.3f}/{v:.3f}/{f:.3f}")
        print(f"    {name:16s} " + "  ".join(row))
    for name, prs_ in (("tune half", tune), ("test half (unseen by the sweep)", test), ("all pairs", prs)):
        _print_confusion(f"chosen rule, {name}: per pair, each pair on its own",
                         _confusion(prs_, _pair_matches(prs_, base, cfg0)))
    for name, prs_ in (("test half", test), ("all pairs", prs)):
        _print_confusion(f"the previous rule (no opening test for the version signal), {name}",
                         _confusion(prs_, _pair_matches(prs_, base, dataclasses.replace(cfg0, version_lead=1.01))))
    # the opening test on its own: what it removes when the same-site roundup and position
    # rules, which cover some of the same pairs, are off
    bare = dataclasses.replace(cfg0, roundup_cover=1.01, expansion_lead=0.0)
    for label, cfg in (("without", dataclasses.replace(bare, version_lead=1.01)), ("with", bare)):
        conf = _confusion(prs, _pair_matches(prs, base, cfg))
        print(f"  roundup and position rules off, {label} the opening test, all pairs: "
              + ", ".join(f"{k} {conf[k][0]}" for k in VERSION_KINDS + NEGATIVE_KINDS))
    old = dataclasses.replace(cfg0, bands=32, rows=4, containment=1.01, version_overlap=1.01, roundup_cover=1.01,
                              expansion_lead=0.0)
    _print_confusion("the first rule (Jaccard >= 0.5, 32 x 4 bands), all pairs",
                     _confusion(prs, _pair_matches(prs, base, old)))

    by_time = sorted(vs, key=lambda v: (v.offset_s, v.doc_id))
    rng = random.Random(3)
    for label, order in (("publication order", by_time),) + tuple(
            (f"shuffled arrival {i + 1}", rng.sample(vs, len(vs))) for i in range(2)):
        chains, neg, miss = _stream(vs, base, cfg0, order)
        print(f"  whole stream, {label}: clusters holding two stories' originals {chains}; negatives in their "
              f"source story's cluster {neg}; positives not in their partner's cluster {miss} of "
              f"{sum(v.positive for v in vs)}")
    return cfg0


# --- core scale ------------------------------------------------------------------------------


def bench_core(args: argparse.Namespace) -> None:
    """``--records`` records through signature + index with a sliding horizon on a synthetic
    event-time clock (``--rate`` records per second, horizon = ``--horizon-records`` records).

    Texts: new stories are 400 tokens drawn from a 50,000-word vocabulary (distinct shingle
    sets, cheap to make); every ``--dup-every``-th record is a near copy of a recent story
    (10 words changed, another outlet); every member carries a full 48-value entity sketch.
    The timed part per record is shingle hashing + MinHash + the distinct-shingle count +
    lookups + decision + insert + horizon pruning (``--core-batch`` records at a time); tokenising and the entity sketch are
    excluded (see the quality part's per-document feature cost).
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
          f"= {args.horizon_records:,} records at {args.rate:g} records/s, decided {args.core_batch} at a time")
    print("   records  in-horizon  rss_MiB  us/record (last interval: sig + index)")
    step = max(1, n // 20)
    last_t = 0.0
    # entity sketches of real size (48 values): the synthetic texts have no capitalised words
    ents = [np.sort(rng.choice(1 << 16, 48, replace=False)).astype("<u2").tobytes() for _ in range(1000)]
    recent: list[list[str]] = []
    ring = 0
    batch: list[Member] = []  # decided --core-batch at a time, as the stage decides a bundle
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
        hs = shingle_hashes(toks, cfg.shingle_size)
        sig, hi, lead = mh.parts(hs, cfg.n_hi)
        nsh = distinct(hs)
        t1 = time.perf_counter()
        batch.append(Member(f"t{i}", f"{i:032x}", i, ts, sig, f"d{i % 500}.example", i % 50 == 0, f"{i:032x}",
                            nsh=nsh, ents=ents[i % len(ents)], hi=hi, lead=lead))
        t_sig += t1 - t0
        if len(batch) >= args.core_batch or (i + 1) % step == 0 or i + 1 == n:
            t1 = time.perf_counter()
            matched += sum(d.matched > 0 for d in idx.process_batch(batch))
            t_idx += time.perf_counter() - t1
            batch = []
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
    from copydesk.schemas.records import ArticleRecord

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
            topic="t", partition=0, offset=i))
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


def _baseline(ref: str) -> Any:
    """The ``Deduplicate`` of git ``ref`` (its transforms/dedup modules, extracted into a
    temporary package ``baseline_dedup``), to time the previous stage in the same run."""
    import importlib
    import subprocess
    import tempfile

    root = Path(__file__).resolve().parents[1]
    d = Path(tempfile.mkdtemp(prefix="dedup-baseline-")) / "baseline_dedup"
    d.mkdir()
    (d / "__init__.py").write_text("")
    for mod in ("core", "coders", "minhash", "stage", "metrics"):
        got = subprocess.run(["git", "-C", str(root), "show", f"{ref}:transforms/dedup/{mod}.py"],
                             capture_output=True, text=True)
        if got.returncode:
            continue  # a module the ref does not have
        src = got.stdout
        (d / f"{mod}.py").write_text(src.replace("copydesk.transforms.dedup.", "baseline_dedup."))
    sys.path.insert(0, str(d.parent))
    return importlib.import_module("baseline_dedup.stage")


def _runner_options(runner: str) -> Any:
    from apache_beam.options.pipeline_options import PipelineOptions

    if runner == "prism":
        from copydesk.pipelines.job import find_prism

        path, where = find_prism()
        if not path:
            raise SystemExit(f"no Prism binary ({where}): .ci/run builds it with go install")
        return "PrismRunner", PipelineOptions(["--prism_location", path, "--environment_type", "LOOPBACK"])
    return "apache_beam.runners.portability.fn_api_runner.FnApiRunner", PipelineOptions([])



STATE_CALLS: Counter = Counter()


def count_state_calls() -> None:
    """Count the SDK harness's state requests (``GrpcStateHandler._request``: every get,
    append and clear the runner answers; the SDK worker runs in this process on both local
    runners) by kind and state type, into :data:`STATE_CALLS`. Each is a round trip to the
    runner (Prism gives no cache tokens, so nothing is served from the SDK's cache)."""
    from apache_beam.runners.worker import sdk_worker

    h = sdk_worker.GrpcStateHandler
    if getattr(h, "_counted", False):
        return
    orig = h._request

    def _request(self, request):  # type: ignore[no-untyped-def]
        typ = request.state_key.WhichOneof("type")
        tid = getattr(getattr(request.state_key, typ), "transform_id", "") if typ else ""
        STATE_CALLS[(request.WhichOneof("request"), typ)] += 1
        STATE_CALLS[(request.WhichOneof("request"), typ, tid)] += 1
        return orig(self, request)

    h._request, h._counted = _request, True


def _beam_run(recs: list, stage: Any, cfg: Any, seeds: list[dict] | None = None,
              runner: str = "fnapi", made: list[bytes] | None = None) -> tuple[float, float, dict[str, float]]:
    """(wall s, CPU s of this process, gauges) of Create -> [Deduplicate] -> Count;
    ``stage`` is the module holding ``Deduplicate`` (None: a pass-through Map); ``made``: the
    records' sketches as the extraction workers make them (``Envelope.sketch``). The state
    calls of the run are in :data:`STATE_CALLS` afterwards."""
    import apache_beam as beam
    from apache_beam.metrics.metric import MetricsFilter

    from copydesk.schemas.records import Envelope, SourceRef

    name, opts = _runner_options(runner)
    count_state_calls()
    STATE_CALLS.clear()
    t0, c0 = time.perf_counter(), time.process_time()
    p = beam.Pipeline(runner=name, options=opts)
    made = made or [b""] * len(recs)
    pc = p | beam.Create([Envelope(r, SourceRef("t", 0, r.offset), sketch=s) for r, s in zip(recs, made)],
                         reshuffle=False)
    seed = p | "Seeds" >> beam.Create(seeds) if seeds is not None else None
    if stage is not None:
        out = (pc | stage.Deduplicate(cfg, seed=seed))[0]
    else:  # the same inputs (seeds too: building their Create costs as much as the records'), no stage
        out = pc | "Pass" >> beam.Map(lambda r: r)
        if seed is not None:
            _ = seed | "SeedSink" >> beam.Map(lambda e: None)
    _ = out | "c" >> beam.combiners.Count.Globally()
    res = p.run()
    res.wait_until_finish()
    gauges: dict[str, float] = {}
    try:
        q = res.metrics().query(MetricsFilter().with_namespace("copydesk.dedup"))
        for g in q["gauges"]:
            gauges[g.key.metric.name] = g.committed.value if g.committed else g.attempted.value
        for c in q["counters"]:
            if c.key.metric.name.startswith("index_"):
                gauges[c.key.metric.name] = gauges.get(c.key.metric.name, 0) + (c.committed or c.attempted or 0)
    except Exception:  # a runner without gauge support: no state figure
        pass
    return time.perf_counter() - t0, time.process_time() - c0, gauges


def bench_beam(args: argparse.Namespace) -> None:
    """Records through ``Deduplicate`` on the local runners (``--runners fnapi,prism``). On the
    FnApiRunner the state cache is off, as the job runs it
    (``pipelines.pipeline.configure_local_runner``; ``--state-cache`` keeps Beam's default).
    The same records (and seeds) through a pass-through pipeline (Create -> Map -> Count) are timed too
    and subtracted: the rest is the cost of the stage itself. ``--baseline REF`` times the
    stage of git ``REF`` on the same records in the same run. The state figure is the
    ``Index`` step's log (gauge ``index_log_bytes``) over the members it holds
    (``index_members``)."""
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    from copydesk.transforms.dedup import stage as new_stage

    if not args.state_cache:
        worker_handlers.STATE_CACHE_SIZE_MB = 0
    n = args.beam_records
    recs = _beam_records(n)
    cfg = DedupConfig()
    seeds = _beam_seeds(args.beam_seeds, cfg, args.beam_stale_seeds) if args.beam_seeds >= 0 else None
    from copydesk.transforms.sketch import encode_sketch, sketch

    t0 = time.process_time()
    made = [encode_sketch(sketch(r.text, cfg.shingle_size, cfg.min_words, cfg.num_perm, cfg.seed, cfg.entity_k,
                                 cfg.n_hi), cfg.sketch_params) for r in recs]
    made_ms = 1e3 * (time.process_time() - t0) / n
    stages = [("this stage", new_stage, None),
              (f"this stage, sketches made upstream (as the extraction workers do: {made_ms:.2f} ms/record there)",
               new_stage, made)]
    if args.baseline:
        old = _baseline(args.baseline)
        stages.append((f"the stage of {args.baseline}", old, None))
    for runner in args.runners.split(","):
        _beam_run(recs[:50], new_stage, cfg, seeds, runner)  # warm-up: imports, numpy, first pipeline
        # --beam-repeat rounds, every pipeline once per round (round robin, so a load spike hits all
        # alike); per pipeline the round with the least CPU here (and its wall time)
        best: dict[Any, tuple[float, float, dict[str, float], Counter]] = {}
        runs = [("pass", None, None, None), ("pass+made", None, None, made)] + [(lb, m, c, mk) for lb, m, c, mk in (
            (label, mod, mod.DedupConfig() if mod is not new_stage else cfg, mk) for label, mod, mk in stages)]
        for _ in range(args.beam_repeat):
            for key, mod, c, mk in runs:
                w, cpu, g = _beam_run(recs, mod, c, seeds, runner, mk)
                calls = Counter({k: v for k, v in STATE_CALLS.items() if len(k) == 2})
                if key not in best or cpu < best[key][1]:
                    best[key] = (w, cpu, g, calls)
        bw, bc, _, base_calls = best["pass"]
        print(f"beam on {runner}: {n:,} records (state cache {'on' if args.state_cache else 'off'}, "
              f"{'no seed input' if seeds is None else f'{len(seeds):,} seeds'}; best of {args.beam_repeat} "
              f"round(s) by CPU); pass-through pipeline {bw:.1f} s ({bc:.1f} s CPU here); load average "
              f"{os.getloadavg()[0]:.1f}")
        for label, _mod, _c, mk in runs[2:]:
            dw, dc, g, calls = best[label]
            pw, pc_ = best["pass+made" if mk is not None else "pass"][:2]
            sw, sc = dw - pw, dc - pc_
            calls = Counter(calls)
            calls.subtract(base_calls)
            user = sum(v for (_op, typ), v in calls.items() if typ and "user_state" in typ)
            calls_txt = ", ".join(f"{op} {typ} {v:,}" for (op, typ), v in sorted(calls.items()) if v)
            state = ""
            if g.get("index_members"):
                state = (f"; state {g['index_log_bytes'] / g['index_members']:,.0f} bytes per member held "
                         f"({g['index_members']:,.0f} members, {g['index_log_bytes'] / 2**20:.1f} MiB); "
                         f"{g.get('index_batches', 0):,.0f} batches, index built {g.get('index_loads', 0):,.0f} times")
            print(f"  {label}: {dw:.1f} s wall ({dc:.1f} s CPU here) = {n / dw:,.0f} records/s end to end; "
                  f"stage alone {sw:.1f} s = {1000 * sw / n:.2f} ms/record ({1000 * sc / n:.2f} ms CPU here){state}; "
                  f"peak RSS so far {peak_rss_mb():.0f} MiB", flush=True)
            print(f"    state calls beyond the pass-through: {user / n:.3f} keyed-state calls per record "
                  f"({calls_txt})", flush=True)


# --- the job on Prism: keyed-state calls per record in a streaming run -------------------------


def bench_job(args: argparse.Namespace) -> None:
    """The whole job (``run_job``, Prism, the SDK harness in this process) on a real Kafka
    node (``tests/realkafka.py``): ``--job-copies`` x the fundus pages as ``{"url", "html"}``
    messages (no fetching) under distinct URLs (so copy 2 onwards are exact copies of copy
    1), ``--job-rounds`` restarts (each a new job: state empty, restored from
    ``--fingerprint-topic``). Prints the state requests the SDK harness made per record by
    kind (the dedup index's keyed state, the side input of seeds), the index step's bundles
    and records per bundle, and the dedup stage's CPU per record (its two DoFns timed in
    process, each timed on its own thread's CPU clock: the job's other threads run meanwhile)."""
    import uuid

    import orjson

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from realkafka import KafkaBroker

    from copydesk.pipelines.demo.broker import create_topics
    from copydesk.pipelines.job import run_job
    from copydesk.transforms.dedup import stage as st

    fundus = Path(__file__).resolve().parents[2] / "shared" / "eval" / "fundus" / "html"
    import gzip

    files = sorted(fundus.glob("*.html*"))
    if not files:
        print(f"job: {fundus} absent, skipped")
        return
    htmls = [(gzip.open(f).read() if f.suffix == ".gz" else f.read_bytes()).decode("utf-8", "replace") for f in files]
    count_state_calls()
    timing = Counter()

    orig_batch, orig_member = st._Index._batch, st.member_for

    def batch(self, element, *a):  # type: ignore[no-untyped-def]
        t0 = time.thread_time()
        out = list(orig_batch(self, element, *a))
        timing["index"] += time.thread_time() - t0
        timing["index_calls"] += 1
        timing["index_records"] += len(element[1])
        return out

    def member(*a, **kw):  # type: ignore[no-untyped-def]
        t0 = time.thread_time()
        m = orig_member(*a, **kw)
        timing["prepare"] += time.thread_time() - t0
        return m

    st._Index._batch, st.member_for = batch, member  # the index step's batches, Prepare's features
    from copydesk.transforms.extract import pool as xpool

    orig_sketch = getattr(xpool, "_add_sketch", None)  # (None: a ref from before the sketch moved there)

    def add_sketch(ext):  # type: ignore[no-untyped-def]
        t0 = time.thread_time()
        orig_sketch(ext)
        timing["at_extract"] += time.thread_time() - t0

    if orig_sketch is not None:
        xpool._add_sketch = add_sketch  # the sketch made where the text is (in process: --extract-workers 0)
    with KafkaBroker() as broker:
        run = uuid.uuid4().hex[:8]
        t = {n: f"dd-{run}-{n}" for n in ("in", "out", "dead", "fp")}
        create_topics(broker.bootstrap, list(t.values()), partitions=1)
        from kafka import KafkaProducer

        prod = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5, max_request_size=32 << 20)
        argv = ["--bootstrap-servers", broker.bootstrap, "--input-topic", t["in"], "--group-id", f"g-{run}",
                "--output-topic", t["out"], "--dead-letter-topic", t["dead"], "--fingerprint-topic", t["fp"],
                "--extract-workers", "0"]
        for rnd in range(args.job_rounds):
            for c in range(args.job_copies):
                for i, h in enumerate(htmls):
                    prod.send(t["in"], orjson.dumps({"url": f"https://bench.test/{rnd}/{c}/{i}", "html": h}))
            prod.flush()
            STATE_CALLS.clear()
            timing.clear()
            t0 = time.perf_counter()
            run_job(argv, exit_when_idle=True)
            wall = time.perf_counter() - t0
            n = timing["index_records"]
            mine = {k: v for k, v in STATE_CALLS.items() if len(k) == 3 and "Dedup" in k[2]}  # the dedup stage's
            user = sum(v for (_op, typ, _t), v in mine.items() if typ == "bag_user_state")
            side = sum(v for (_op, typ, _t), v in mine.items() if typ and "side_input" in typ)
            detail = ", ".join(f"{op} {typ} {v:,}" for (op, typ, _t), v in sorted(mine.items()) if v)
            others = sum(v for k, v in STATE_CALLS.items() if len(k) == 3 and "Dedup" not in k[2])
            bundles = sum(v for (op, typ, _t), v in mine.items() if op == "append" and typ == "bag_user_state")
            print(f"job round {rnd + 1} (Prism, {len(htmls) * args.job_copies:,} messages, "
                  f"{'no seeds' if rnd == 0 else 'seeded from the fingerprint topic'}): {n:,} records decided in "
                  f"{timing['index_calls']:,.0f} batches ({n / max(1, timing['index_calls']):.1f} records per batch) and "
                  f"{bundles:,} bundles (one log append each: {n / max(1, bundles):.1f} records per bundle); the dedup stage's keyed-state calls {user / max(1, n):.3f} per record, side-input calls "
                  f"{side / max(1, n):.3f} per record ({detail}; the rest of the job: {others / max(1, n):.3f} "
                  f"state calls per record); dedup CPU per record: Prepare's "
                  f"features {1e3 * timing['prepare'] / max(1, n):.2f} ms + Index {1e3 * timing['index'] / max(1, n):.2f} ms"
                  f" (and at extraction: the content hash and sketch {1e3 * timing['at_extract'] / max(1, n):.2f} ms); "
                  f"job wall {wall:.1f} s", flush=True)
        prod.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", default="quality,core,beam")
    ap.add_argument("--records", type=int, default=1_000_000, help="records for the core benchmark")
    ap.add_argument("--horizon-records", type=int, default=200_000, help="records inside the horizon (core)")
    ap.add_argument("--rate", type=float, default=10.0, help="synthetic records per second of event time (core)")
    ap.add_argument("--dup-every", type=int, default=4, help="every n-th record is a copy (core)")
    ap.add_argument("--core-batch", type=int, default=32,
                    help="core: records decided together (DedupIndex.process_batch; the stage: one bundle)")
    ap.add_argument("--beam-records", type=int, default=20_000)
    ap.add_argument("--beam-repeat", type=int, default=1, help="beam: rounds; each pipeline's least-CPU round is printed")
    ap.add_argument("--job-copies", type=int, default=2, help="job: copies of the fundus pages per round")
    ap.add_argument("--job-rounds", type=int, default=2, help="job: rounds (each a new job, seeded)")
    ap.add_argument("--runners", default="fnapi,prism", help="beam: fnapi and/or prism (the binary the job finds: pipelines/job.py find_prism)")
    ap.add_argument("--baseline", default="d844a8f", help="beam: also time the stage of this git ref ('' for none)")
    ap.add_argument("--state-cache", action="store_true",
                    help="beam: keep Beam's state cache (the job turns it off on the FnApiRunner)")
    ap.add_argument("--beam-stale-seeds", type=int, default=0,
                    help="beam: with --beam-seeds, N more entries a month old (older than the horizon)")
    ap.add_argument("--beam-seeds", type=int, default=-1,
                    help="beam: pass N fingerprint entries as seed= (0: an empty seed input, as the job with "
                         "an empty --fingerprint-topic; default: no seed input)")
    args = ap.parse_args(argv)
    parts = set(args.part.split(","))
    if "quality" in parts:
        bench_quality(args)
    if "core" in parts:
        bench_core(args)
    if "beam" in parts:
        bench_beam(args)
    if "job" in parts:
        bench_job(args)


if __name__ == "__main__":
    main()
