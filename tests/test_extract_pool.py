"""Failure modes of the supervised extraction pool, the Beam stage, and `copydesk extract`."""

from __future__ import annotations

import json
import time

import pytest

from copydesk.transforms.extract.core import TEST_HOOKS_ENV, ExtractConfig, Extracted
from copydesk.transforms.extract.pool import ExtractFailure, ExtractPool

GOOD = (
    "<html><head><title>Council approves budget</title></head><body><article>"
    "<h1>Council approves budget</h1>"
    + "".join(
        f"<p>The city council approved the budget for the coming year on Tuesday evening, paragraph {i}, "
        "after a long debate about schools, roads and the new public library in the centre.</p>"
        for i in range(6)
    )
    + "</article></body></html>"
)
HANG = "<!--copydesk-test:hang-->" + GOOD
CRASH = "<!--copydesk-test:crash-->" + GOOD
RAISE = "<!--copydesk-test:raise-->" + GOOD
EMPTY = "<html><body></body></html>"


@pytest.fixture
def hooks(monkeypatch):
    monkeypatch.setenv(TEST_HOOKS_ENV, "1")


def test_pool_survives_hang_crash_and_errors(hooks):
    with ExtractPool(ExtractConfig(), workers=2, timeout_s=5.0) as pool:
        res = pool.extract_many([(GOOD, None), (HANG, None), (CRASH, None), (EMPTY, None), (RAISE, None), (GOOD, None)])
        assert isinstance(res[0], Extracted) and "council approved" in res[0].text
        assert isinstance(res[1], ExtractFailure) and res[1].reason == "extract_timeout"
        assert isinstance(res[2], ExtractFailure) and res[2].reason == "extract_crash"
        assert isinstance(res[3], ExtractFailure) and res[3].reason == "empty"
        assert isinstance(res[4], ExtractFailure) and res[4].reason == "extract_error"
        assert isinstance(res[5], Extracted)
        assert pool.restarts == 2
        # the pool keeps working after replacing workers
        again = pool.extract(GOOD)
        assert isinstance(again, Extracted)


def test_hooks_inert_without_env(monkeypatch):
    monkeypatch.delenv(TEST_HOOKS_ENV, raising=False)
    with ExtractPool(ExtractConfig(), workers=0) as pool:
        assert isinstance(pool.extract(CRASH), Extracted)  # in-process: would have exited


def test_too_large_is_refused_before_the_worker():
    with ExtractPool(ExtractConfig(max_html_chars=100), workers=1) as pool:
        res = pool.extract(GOOD)
    assert isinstance(res, ExtractFailure) and res.reason == "too_large"


def test_in_process_mode_matches_pool():
    with ExtractPool(workers=0) as p0, ExtractPool(workers=1) as p1:
        a, b = p0.extract(GOOD), p1.extract(GOOD)
    assert isinstance(a, Extracted) and a == b


def test_beam_extract_articles():
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from copydesk.schemas.records import FetchedPage, InputMessage, SourceRef
    from copydesk.transforms.extract.stage import ExtractArticles

    def page(url, html, off):
        return FetchedPage(message=InputMessage(url=url, ref=SourceRef(topic="t", partition=0, offset=off),
                                                raw=url), final_url=url, html=html)

    from copydesk.transforms.extract.metrics import DOMAIN_OUTCOMES

    pages = [page("https://example.com/a", GOOD, 1), page("https://example.com/b", EMPTY, 2)]
    DOMAIN_OUTCOMES.take()
    p = TestPipeline()
    arts, dead = p | beam.Create(pages) | ExtractArticles(ExtractConfig(), workers=1)
    assert_that(arts | "u" >> beam.Map(lambda a: (a.record.url, a.record.title, a.ref.offset)),
                equal_to([("https://example.com/a", "Council approves budget", 1)]), label="arts")
    assert_that(dead | "r" >> beam.Map(lambda d: (d.record.stage, d.record.reason, d.ref.offset, d.record.url)),
                equal_to([("extract", "empty", 2, "https://example.com/b")]), label="dead")
    result = p.run()
    result.wait_until_finish()
    # per-domain outcomes in the process's tally, not one Beam counter per domain
    assert DOMAIN_OUTCOMES.take() == {"example.com": {"ok": 1, "empty": 1}}
    names = {(c.key.metric.namespace, c.key.metric.name): c.committed for c in result.metrics().query()["counters"]}
    assert names[("copydesk.extract", "pages_in")] == 2 and names[("copydesk.extract", "dead_empty")] == 1
    assert not [k for k in names if k[0].startswith("copydesk") and ":" in k[1]]  # not Beam's own


def test_run_extract_writes_one_line_per_file(tmp_path):
    import gzip

    from copydesk.pipelines.extract_cmd import run_extract

    d = tmp_path / "in"
    d.mkdir()
    (d / "a.html").write_text(GOOD, encoding="utf-8")
    (d / "b.html.gz").write_bytes(gzip.compress(GOOD.encode()))
    (d / "c.html").write_text(EMPTY, encoding="utf-8")
    (d / "ignored.txt").write_text("x")
    out = tmp_path / "out.jsonl"
    counts = run_extract([str(d)], str(out), url="https://apnews.com/article/x", workers=0)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["input"].rsplit("/", 1)[1] for r in rows] == ["a.html", "b.html.gz", "c.html"]
    assert counts == {"inputs": 3, "ok": 2, "errors": 1, "reasons": {"empty": 1}}
    assert rows[0]["title"] == "Council approves budget" and rows[0]["wire"]["agencies"] == ["AP"]
    assert rows[2]["error"]["reason"] == "empty"


def test_submitted_pages_come_back_by_tag_while_the_caller_goes_on(hooks):
    """submit() returns before the page is extracted; results() hands each page back under
    its tag (a hang and a crash among them), wait=True blocks until one is there."""
    with ExtractPool(ExtractConfig(), workers=2, timeout_s=5.0) as pool:
        t0 = time.monotonic()
        for tag, html in [("hang", HANG), ("good", GOOD), ("crash", CRASH), ("empty", EMPTY)]:
            pool.submit(html, None, tag=tag)
        assert time.monotonic() - t0 < 5.0 and pool.pending == 4  # nothing waited for the hang
        got = {}
        while pool.pending:
            for tag, result, seconds in pool.results(wait=True):
                got[tag] = (result, seconds)
        assert sorted(got) == ["crash", "empty", "good", "hang"]
        assert isinstance(got["good"][0], Extracted) and got["good"][1] is not None
        assert got["hang"][0].reason == "extract_timeout" and got["hang"][1] >= 5.0
        assert got["crash"][0].reason == "extract_crash" and got["empty"][0].reason == "empty"
        assert pool.results() == [] and pool.pending == 0


def test_a_released_pool_is_leased_again_with_its_workers():
    from copydesk.transforms.extract.pool import lease, release

    config = ExtractConfig(timeout_s=7.0)  # a configuration no other test leases
    first = lease(config, workers=1)
    first.submit(GOOD, None, tag="a")
    [(tag, result, _seconds)] = first.results(wait=True)
    assert tag == "a" and isinstance(result, Extracted)
    pids = [w.proc.pid for w in first._shared.pool._pool]
    release(first)
    second = lease(config, workers=1)
    try:
        assert second._shared is first._shared and [w.proc.pid for w in second._shared.pool._pool] == pids
    finally:
        release(second)


def test_clients_on_threads_share_one_pool_and_each_gets_its_own_pages(hooks):
    """Concurrent bundles of a streaming runner: each thread's client feeds the same two
    workers and gets back exactly the pages it submitted (a hang and a crash among them),
    while the others' pages go on."""
    import threading

    from copydesk.transforms.extract.pool import lease, release

    config = ExtractConfig(timeout_s=4.0)  # a configuration no other test leases
    pages = {0: [GOOD, HANG, GOOD], 1: [EMPTY, GOOD], 2: [CRASH, GOOD, GOOD, EMPTY]}
    got: dict[int, dict] = {}
    clients = {n: lease(config, workers=2) for n in pages}

    def feed(n: int) -> None:
        client, out = clients[n], {}
        for i, html in enumerate(pages[n]):
            client.submit(html, None, tag=(n, i))
        while client.pending:
            for tag, result, _seconds in client.results(wait=True):
                out[tag] = result
        got[n] = out

    threads = [threading.Thread(target=feed, args=(n,)) for n in pages]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        shared = {id(c._shared) for c in clients.values()}
        assert len(shared) == 1 and len(clients[0]._shared.pool._pool) == 2  # one pool, two workers
        for n, htmls in pages.items():
            assert sorted(got[n]) == [(n, i) for i in range(len(htmls))]
            for i, html in enumerate(htmls):
                r = got[n][(n, i)]
                want = {GOOD: Extracted, EMPTY: "empty", HANG: "extract_timeout", CRASH: "extract_crash"}[html]
                assert isinstance(r, Extracted) if want is Extracted else r.reason == want
        assert clients[0]._shared.pool.restarts == 2
    finally:
        for c in clients.values():
            release(c)


def test_workers_take_the_environment_of_the_pool_owner(monkeypatch):
    """Workers fork from a long-lived forkserver; the test hooks set after it started must
    still reach a new pool's workers."""
    monkeypatch.delenv(TEST_HOOKS_ENV, raising=False)
    with ExtractPool(ExtractConfig(), workers=1) as pool:
        assert isinstance(pool.extract(CRASH), Extracted)  # hooks off: an ordinary page
    monkeypatch.setenv(TEST_HOOKS_ENV, "1")
    with ExtractPool(ExtractConfig(), workers=1) as pool:
        assert pool.extract(CRASH).reason == "extract_crash"
