"""Beam tests of ``Deduplicate`` on the FnApiRunner (the local streaming runner)."""

from __future__ import annotations

import pickle
import random
import shutil
import sys
import tempfile
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dedup_helpers import FNAPI, envelope, rec, story, trim, update, wrap  # noqa: E402

from copydesk.schemas.records import ArticleRecord  # noqa: E402
from copydesk.transforms.dedup.stage import Deduplicate, DedupConfig, fingerprint_entry  # noqa: E402


def _prism() -> str:
    """The Prism binary the job would use (.ci/run builds it into .cache/bin); a test that
    needs it fails, rather than skips, where there is none: the machine has Go."""
    from copydesk.pipelines.job import find_prism

    path, where = find_prism()
    assert path, f"no Prism binary ({where}): run .ci/run, which builds it with go install"
    return path


def run(records: list[ArticleRecord], cfg: DedupConfig | None = None,
        seeds: list[dict] | None = None, runner: str = FNAPI) -> tuple[list[ArticleRecord], list[ArticleRecord]]:
    """Run Deduplicate over ``records`` (in envelopes) in one beam.Create (one bundle: concurrent
    copies); return (records, dropped) as captured by assert_that matchers, each output
    checked to keep its envelope's ref."""
    tmp = Path(tempfile.mkdtemp(prefix="dedup-test-"))

    def capture(name: str):
        path = str(tmp / name)

        def _m(actual: list[ArticleRecord]) -> None:  # runs in the runner: hand results back via a file
            with open(path, "wb") as f:
                pickle.dump(list(actual), f)
        return _m

    opts = (PipelineOptions(["--prism_location", _prism(), "--environment_type", "LOOPBACK"])
            if runner == "PrismRunner" else None)
    with TestPipeline(runner=runner, options=opts) as p:
        seed_pc = p | "Seeds" >> beam.Create(seeds) if seeds is not None else None
        out, dropped = (p | beam.Create([envelope(r) for r in records], reshuffle=False)
                        | Deduplicate(cfg or DedupConfig(), seed=seed_pc))
        assert_that(out, capture("out"), label="out")
        assert_that(dropped, capture("dropped"), label="dropped")
    got = {n: pickle.loads((tmp / n).read_bytes()) for n in ("out", "dropped")}
    shutil.rmtree(tmp, ignore_errors=True)
    for e in got["out"] + got["dropped"]:  # the ref travels with its record through the stage
        assert (e.ref.topic, e.ref.partition, e.ref.offset) == (e.record.topic, e.record.partition, e.record.offset)
    return [e.record for e in got["out"]], [e.record for e in got["dropped"]]


def by_url(rs: list[ArticleRecord]) -> dict[str, ArticleRecord]:
    return {r.url: r for r in rs}


def corpus() -> list[ArticleRecord]:
    """Two stories carried by several outlets, plus an unrelated one."""
    s1, s2 = story(1), story(2)
    return [
        rec("ap1", "apnews.com", s1, 0, 0),
        rec("a", "guardian.example", wrap(s1), 5, 1),
        rec("b", "local.example", trim(s1), 9, 2),
        rec("c", "daily.example", wrap(trim(s1)), 12, 3),
        rec("r2", "reuters.com", s2, 1, 4),
        rec("d", "guardian.example", wrap(s2), 7, 5),
        rec("e", "other.example", story(3), 8, 6),
    ]


def test_three_outlets_one_cluster_annotated_not_dropped() -> None:
    rs = corpus()
    out, dropped = run(rs)
    assert dropped == [] and len(out) == len(rs)
    assert sorted(r.offset for r in out) == [r.offset for r in rs]  # refs preserved (run checks them)
    u = by_url(out)
    story1 = [u[f"https://{d}/{k}"] for d, k in (("apnews.com", "ap1"), ("guardian.example", "a"),
                                                 ("local.example", "b"), ("daily.example", "c"))]
    assert {r.cluster_id for r in story1} == {rs[0].id}
    assert [r.is_canonical for r in story1] == [True, False, False, False]
    assert all(r.duplicate_of == rs[0].id for r in story1[1:])
    assert set(story1[-1].cluster_outlets) >= {"apnews.com", "guardian.example", "local.example", "daily.example"}
    assert u["https://guardian.example/d"].cluster_id == rs[4].id
    assert u["https://other.example/e"].cluster_id == rs[6].id and u["https://other.example/e"].is_canonical
    assert all(r.fingerprint.startswith("mh1:") for r in out)


def test_prism_runner_same_clusters() -> None:
    """The stage on Prism (its streaming runner): the same clusters as on the FnApiRunner,
    also when the records come in bundles of their own, and with seeds."""
    rs = corpus()
    out, dropped = run(rs, runner="PrismRunner")
    ref, _ = run(rs)
    assert dropped == [] and len(out) == len(rs)
    got = {r.url: (r.cluster_id, r.is_canonical, r.duplicate_of, r.duplicate_kind) for r in out}
    assert got == {r.url: (r.cluster_id, r.is_canonical, r.duplicate_of, r.duplicate_kind) for r in ref}
    entries = [fingerprint_entry(r) for r in out]
    out2, _ = run([rec("late", "z.example", wrap(story(1)), 40, 9)], seeds=entries, runner="PrismRunner")
    assert out2[0].cluster_id == rs[0].id


def test_shuffled_arrival_same_clusters() -> None:
    rs = corpus()
    rng = random.Random(4)
    seen = []
    for _ in range(2):
        order = list(rs)
        rng.shuffle(order)
        out, _ = run(order)
        u = by_url(out)
        clusters = {r.url: u[r.url].cluster_id for r in rs}
        s1 = {clusters[r.url] for r in rs[:4]}
        s2 = {clusters[r.url] for r in rs[4:6]}
        assert len(s1) == 1 and len(s2) == 1 and s1 != s2 and clusters[rs[6].url] not in s1 | s2
        # the agency copy is canonical whatever the order
        assert u[rs[0].url].is_canonical and u[rs[4].url].is_canonical
        # canonical as known at decision time: copies after the agency copy point to it,
        # earlier ones to the first-seen member of the story
        pos = {r.url: i for i, r in enumerate(order)}
        story1_ids = {r.id for r in rs[:4]}
        for r in rs[1:4]:
            d = u[r.url]
            if pos[r.url] > pos[rs[0].url]:
                assert d.duplicate_of == rs[0].id
            else:
                assert d.is_canonical or d.duplicate_of in story1_ids
        seen.append(frozenset(frozenset(x for x in clusters if clusters[x] == c) for c in set(clusters.values())))
    assert seen[0] == seen[1]


def test_exact_url_repeat_and_exact_copy_and_update() -> None:
    s = story(7)
    rs = [rec("ap", "apnews.com", s, 0, 0), rec("ap", "apnews.com", s, 10, 1),
          rec("copy", "x.example", s, 11, 2), rec("ap-upd", "apnews.com", update(s, 7), 20, 3)]
    out, _ = run(rs)
    kinds = sorted((r.offset, r.duplicate_kind, r.cluster_id == rs[0].id, r.is_update) for r in out)
    assert kinds == [(0, None, True, False), (1, "exact_url", True, False), (2, "exact", True, False),
                     (3, "update", True, True)]


def test_drop_duplicates_accounts_for_every_record() -> None:
    rs = corpus() + [rec("ap1", "apnews.com", story(1), 30, 7)]
    out, dropped = run(rs, DedupConfig(drop_duplicates=True))
    assert len(out) + len(dropped) == len(rs)
    assert sorted(r.offset for r in out + dropped) == list(range(len(rs)))
    assert all(r.is_canonical or r.is_update for r in out)
    assert all(not r.is_canonical for r in dropped)
    assert {r.url for r in out} == {"https://apnews.com/ap1", "https://reuters.com/r2", "https://other.example/e"}


def test_horizon_expiry() -> None:
    s = story(8)
    cfg = DedupConfig(horizon_seconds=2 * 24 * 3600)
    rs = [rec("a", "a.example", s, 0, 0, day=1), rec("b", "b.example", wrap(s), 0, 1, day=2),
          rec("c", "c.example", wrap(s), 0, 2, day=9)]
    out, _ = run(rs, cfg)
    u = by_url(out)
    assert u["https://b.example/b"].cluster_id == rs[0].id
    late = u["https://c.example/c"]
    assert late.cluster_id == rs[2].id and late.is_canonical and late.duplicate_kind is None


def test_restart_via_seeds() -> None:
    s1, s2 = story(11), story(12)
    batch_a = [rec("o1", "apnews.com", s1, 0, 0), rec("o2", "x.example", s2, 1, 1)]
    out_a, _ = run(batch_a)
    entries = [fingerprint_entry(r) for r in out_a]
    batch_b = [rec("c1", "y.example", wrap(s1), 30, 2), rec("c2", "z.example", trim(s2), 31, 3),
               rec("o2", "x.example", s2, 32, 4), rec("new", "n.example", story(13), 33, 5)]
    out_b, _ = run(batch_b, seeds=entries)
    u = by_url(out_b)
    assert u["https://y.example/c1"].cluster_id == batch_a[0].id
    assert u["https://y.example/c1"].duplicate_of == batch_a[0].id and u["https://y.example/c1"].duplicate_kind == "near"
    assert u["https://z.example/c2"].cluster_id == batch_a[1].id
    assert u["https://x.example/o2"].duplicate_kind == "exact_url"
    assert u["https://n.example/new"].is_canonical and u["https://n.example/new"].cluster_id == batch_b[3].id
    # without the seeds the copies would have started clusters of their own
    out_c, _ = run(batch_b)
    assert by_url(out_c)["https://y.example/c1"].cluster_id == batch_b[0].id


def test_hard_negatives_not_merged() -> None:
    s = story(20, 300)
    para = s.split("\n\n")[1]
    rs = [rec("w", "apnews.com", s, 0, 0),
          rec("roundup", "r.example", "\n\n".join([story(21, 80), para, story(22, 80), story(23, 80)]), 1, 1),
          rec("event", "e.example", s.split("\n\n")[0][:100] + ".\n\n" + story(24, 250), 2, 2)]
    out, _ = run(rs)
    assert len({r.cluster_id for r in out}) == 3 and all(r.is_canonical for r in out)


def test_seeds_older_than_newest_minus_horizon_are_dropped() -> None:
    """Seed pruning: an entry older than the newest seed's event time minus the horizon is
    not restored. A live record cannot see it anyway; a backfill record with an old event
    time no longer does (documented)."""
    from copydesk.transforms.dedup.stage import seed_cutoff, seed_members

    cfg = DedupConfig(horizon_seconds=2 * 24 * 3600)
    s_old, s_new = story(31), story(32)
    seeded = [rec("old", "apnews.com", s_old, 0, 0, day=1), rec("new", "x.example", s_new, 0, 1, day=9)]
    first, _ = run(seeded, cfg)
    entries = [fingerprint_entry(r) for r in first]
    assert seed_cutoff(entries, cfg) == max(e["ts"] for e in entries) - cfg.horizon_seconds
    assert seed_cutoff([], cfg) == float("-inf")
    assert seed_cutoff(entries, DedupConfig(prune_seeds=False)) == float("-inf")
    old = next(e for e in entries if e["id"] == seeded[0].id)
    assert old["ts"] < seed_cutoff(entries, cfg)
    assert [m.id for m in seed_members(entries, cfg)] == [seeded[1].id]  # the old one is not restored
    assert [m.id for m in seed_members(entries, DedupConfig(prune_seeds=False))] == [seeded[0].id, seeded[1].id]

    # a backfill copy of the old story, event time day 2 (within the old seed's horizon)
    backfill = [rec("bf", "y.example", wrap(s_old), 5, 2, day=2),
                rec("live", "z.example", wrap(s_new), 5, 3, day=10)]
    out, _ = run(backfill, cfg, seeds=entries)
    u = by_url(out)
    assert u["https://y.example/bf"].cluster_id == backfill[0].id  # the old seed was dropped
    assert u["https://z.example/live"].cluster_id == seeded[1].id  # recent seeds still restore clusters
    # prune_seeds=False restores the old seed too (checked on seed_members above), but the one
    # index releases it anyway once it holds the newer seed (its horizon runs from the newest
    # event time it has seen): a backfill needs its own fingerprint topic (docs/dedup.md)
    out, _ = run(backfill, DedupConfig(horizon_seconds=2 * 24 * 3600, prune_seeds=False), seeds=entries)
    assert by_url(out)["https://z.example/live"].cluster_id == seeded[1].id


def test_many_seeds_marker_merge_once_per_key() -> None:
    """Seeds merge into a key once (the bag marker): several copies touching the same keys
    after a restart all join the seeded story, none sees a seed twice."""
    s = story(40)
    first, _ = run([rec("o", "apnews.com", s, 0, 0)])
    entries = [fingerprint_entry(r) for r in first]
    copies = [rec(f"c{i}", f"d{i}.example", wrap(s), 10 + i, 1 + i) for i in range(4)]
    out, _ = run(copies, seeds=entries)
    assert len(out) == 4
    assert {r.cluster_id for r in out} == {first[0].id}
    assert all(r.duplicate_of == first[0].id and not r.is_canonical for r in out)
    assert all(r.cluster_outlets[0] == "apnews.com" and len(r.cluster_outlets) == len(set(r.cluster_outlets))
               for r in out)


class _Bag:
    """A bag or read-modify-write state of one key, as a bundle sees it (the SDK's user state
    commits a bundle's writes at its end; here they apply at once)."""

    def __init__(self) -> None:
        self.items: list = []

    def read(self):  # a bag's read; also ReadModifyWriteState.read below
        return list(self.items)

    def add(self, v) -> None:
        self.items.append(v)

    def clear(self) -> None:
        self.items = []


class _Value(_Bag):
    def read(self):
        return self.items[0] if self.items else None

    def write(self, v) -> None:
        self.items = [v]


def test_index_state_protocol_version_written_and_rebuilt_from_the_log() -> None:
    """The index step's state (docs/dedup.md): the first batch writes a version; later
    batches on the same worker only append to the log (no version write); a worker that
    did not write the state's version (another worker, a restart, here a fresh DoFn) rebuilds
    its index from the log, not from the seeds, so earlier members still match."""
    from apache_beam.transforms.window import GlobalWindow
    from apache_beam.utils.timestamp import Timestamp

    from copydesk.transforms.dedup import stage as st

    cfg = DedupConfig()
    prep = st._Prepare(cfg)
    s1, s2 = story(11), story(12)

    def batch(recs: list[ArticleRecord]) -> tuple[int, list]:
        prep.start_bundle()
        for r in recs:
            assert not list(prep.process(envelope(r), ts=Timestamp(1_700_000_000), win=GlobalWindow()))
        (wv,) = list(prep.finish_bundle())
        return wv.value

    log, ver = _Bag(), _Value()

    def bundle(fn: st._Index, recs: list[ArticleRecord]) -> list[ArticleRecord]:  # one batch, one bundle
        fn.start_bundle()
        return [e.record for e in fn._batch(batch(recs), log, ver, None)]

    a = st._Index(cfg)
    out1 = bundle(a, [rec("x", "a.example", s1, 0, 0)])
    v1 = ver.read()
    assert v1 and len(log.items) == 1 and out1[0].cluster_id == out1[0].id
    out2 = bundle(a, [rec("y", "b.example", s2, 1, 1)])
    assert ver.read() == v1 and len(log.items) == 2 and out2[0].cluster_id == out2[0].id  # append only
    b = st._Index(cfg)  # another worker: its own uid, no index in this process for it
    b._uid = "0" * 32  # (another step uid: its version tag differs too)
    out3 = bundle(b, [rec("z", "c.example", wrap(s1), 2, 2)])
    assert out3[0].cluster_id == out1[0].id  # found through the log
    assert ver.read() not in (None, v1) and len(log.items) == 3  # b wrote its version
    out4 = bundle(a, [rec("w", "d.example", wrap(s2), 3, 3)])
    assert out4[0].cluster_id == out2[0].id  # a saw b's version: rebuilt from the log
    assert [str(r.id) for r in out3 + out4]  # every record came out



def test_the_sketch_made_at_extraction_is_the_one_dedup_makes() -> None:
    """ExtractConfig(sketch=True): the extraction worker computes the content hash and dedup's
    sketch from one tokenisation; the dedup stage uses that sketch (same member as computing
    it itself), ignores one made with other parameters or not one at all, and a record without
    one (replay, raw pages, older producers) still gets one in the stage."""
    from copydesk.schemas.records import Envelope, SourceRef
    from copydesk.transforms.dedup.stage import member_for
    from copydesk.transforms.extract.core import ExtractConfig
    from copydesk.transforms.extract.pool import ExtractPool
    from copydesk.transforms.sketch import SketchParams, decode_sketch, encode_sketch, sketch
    from copydesk.transforms.words import content_hash

    body = story(41, 260)
    paras = "".join(f"<p>{' '.join(body.split()[i:i + 40])}.</p>" for i in range(0, 260, 40))
    html = f"<html><head><title>Story</title></head><body><article><h1>Story</h1>{paras}</article></body></html>"
    with ExtractPool(ExtractConfig(sketch=True), workers=0) as pool:
        ext = pool.extract(html, "https://a.example/story")
    with ExtractPool(ExtractConfig(), workers=0) as pool:
        plain = pool.extract(html, "https://a.example/story")
    assert len(ext.text.split()) > 200 and plain.text == ext.text
    assert plain.sketch == b"" and plain.content_hash == ""
    assert ext.content_hash == content_hash(ext.text)
    cfg = DedupConfig()
    assert decode_sketch(ext.sketch, cfg.sketch_params) == sketch(ext.text, 5, 30, 128, 1, 48, cfg.n_hi)
    r = rec("x", "a.example", ext.text)
    strip = lambda m: m._replace(token="", stamp=0)  # noqa: E731
    assert strip(member_for(r, cfg, stamp=0, made=ext.sketch)) == strip(member_for(r, cfg, stamp=0))
    # made with other parameters, or garbage: not used (the stage computes its own)
    other = encode_sketch(sketch("unrelated " * 40, 5, 1, 128, 1, 48, 48), SketchParams(min_words=1))
    assert strip(member_for(r, cfg, stamp=0, made=other)) == strip(member_for(r, cfg, stamp=0))
    assert strip(member_for(r, cfg, stamp=0, made=b"\x01junk")) == strip(member_for(r, cfg, stamp=0))
    # through the stage: the same decisions with and without the envelopes' sketches
    s1 = story(42)
    rs = [rec("p", "a.example", s1, 0, 0), rec("q", "b.example", wrap(s1), 1, 1), rec("s", "c.example", story(43), 2, 2)]
    made = [Envelope(x, SourceRef(x.topic, x.partition, x.offset),
                     sketch=encode_sketch(sketch(x.text, 5, 30, 128, 1, 48, 48))) for x in rs]
    got = by_url(run_envelopes(made))
    want = by_url(run(rs)[0])
    assert {u: (x.cluster_id, x.duplicate_kind, x.fingerprint) for u, x in got.items()} == \
        {u: (x.cluster_id, x.duplicate_kind, x.fingerprint) for u, x in want.items()}
    assert got[rs[1].url].cluster_id == got[rs[0].url].cluster_id


def run_envelopes(envs: list) -> list[ArticleRecord]:
    """Envelopes as given (with their sketches) through Deduplicate on the FnApiRunner."""
    tmp = Path(tempfile.mkdtemp(prefix="dedup-test-"))
    path = str(tmp / "out")

    def _m(actual: list) -> None:
        assert all(not e.sketch for e in actual)  # used in the stage, not carried further
        with open(path, "wb") as f:
            pickle.dump([e.record for e in actual], f)

    with TestPipeline(runner=FNAPI) as p:
        out, _dropped = p | beam.Create(envs, reshuffle=False) | Deduplicate(DedupConfig())
        assert_that(out, _m)
    got = pickle.loads(Path(path).read_bytes())
    shutil.rmtree(tmp, ignore_errors=True)
    return got
