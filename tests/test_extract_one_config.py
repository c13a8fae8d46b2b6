"""One extractor: ``copydesk extract``, the pipeline and the benchmark run the same configuration by
default, and give the same record for the same page."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from copydesk.pipelines.cli import extract_cli_config
from copydesk.pipelines.options import CopydeskOptions
from copydesk.pipelines.pipeline import extract_config
from copydesk.transforms.extract.core import ExtractConfig

PARAS = "".join(
    f"<p>Paragraph {i}: the council approved the budget for schools, roads and the new bridge on Tuesday.</p>"
    for i in range(8))
PAGE = ("<html lang='en'><head><title>Council approves budget</title>"
        "<meta name='author' content='Jane Doe'><meta property='og:title' content='Council approves budget'>"
        "</head><body><nav><a href='/'>Home</a> <a href='/news'>News</a></nav><article>"
        f"<h1>Council approves budget</h1><p>BERLIN (dpa) - The council met on Tuesday.</p>{PARAS}"
        "<p>Share this article</p></article></body></html>")
URL = "https://example.com/2025/council-budget"


def test_cli_pipeline_and_benchmark_defaults_are_one_config():
    pipeline = extract_config(CopydeskOptions([]))
    assert extract_cli_config() == pipeline == ExtractConfig()
    assert extract_cli_config("always") == extract_config(CopydeskOptions(["--extract-compare", "always"]))
    bench_file = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_extract.py"
    spec = importlib.util.spec_from_file_location("bench_extract", bench_file)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.copydesk_config() == pipeline


def test_same_record_for_the_same_page_through_the_cli_and_the_pipeline(tmp_path):
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from copydesk.pipelines.extract_cmd import run_extract
    from copydesk.schemas.records import FetchedPage, InputMessage, SourceRef
    from copydesk.transforms.extract.stage import ExtractArticles

    (tmp_path / "page.html").write_text(PAGE, encoding="utf-8")
    run_extract([str(tmp_path / "page.html")], str(tmp_path / "out.jsonl"), url=URL,
                config=extract_cli_config(), workers=0)
    cli = json.loads((tmp_path / "out.jsonl").read_text().splitlines()[0])
    fields = ("text", "title", "authors", "published_at", "language", "site_name", "description", "categories",
              "tags", "image", "photo_credits")

    def view(a):
        return (tuple(json.dumps(getattr(a, f)) for f in fields), tuple(a.wire.agencies), a.wire.dateline)

    want = (tuple(json.dumps(cli[f]) for f in fields), tuple(cli["wire"]["agencies"]), cli["wire"]["dateline"])
    assert "dpa" in want[1] and "Share this article" not in cli["text"]
    page = FetchedPage(message=InputMessage(url=URL, ref=SourceRef(topic="t", partition=0, offset=1), raw=URL),
                       final_url=URL, html=PAGE)
    with TestPipeline() as p:
        arts, _ = p | beam.Create([page]) | ExtractArticles(extract_config(CopydeskOptions([])), workers=0)
        assert_that(arts | beam.Map(lambda e: view(e.record)), equal_to([want]))
