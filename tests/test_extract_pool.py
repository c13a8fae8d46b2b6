"""Failure modes of the supervised extraction pool, the Beam stage, and `copydesk extract`."""

from __future__ import annotations

import json

import pytest

from copydesk.transforms.extract.stage import TEST_HOOKS_ENV, ExtractConfig, Extracted
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

    pages = [page("https://example.com/a", GOOD, 1), page("https://example.com/b", EMPTY, 2)]
    with TestPipeline() as p:
        arts, dead = p | beam.Create(pages) | ExtractArticles(ExtractConfig(), workers=1)
        assert_that(arts | "u" >> beam.Map(lambda a: (a.url, a.title, a.offset)),
                    equal_to([("https://example.com/a", "Council approves budget", 1)]), label="arts")
        assert_that(dead | "r" >> beam.Map(lambda d: (d.stage, d.reason, d.offset, d.url)),
                    equal_to([("extract", "empty", 2, "https://example.com/b")]), label="dead")


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
