"""FetchPages as a Beam stage: pages and dead letters on separate outputs, metrics, no failed bundles."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from copydesk.schemas.records import InputMessage, SourceRef
from copydesk.transforms.fetch import stage as fetch_module
from copydesk.transforms.fetch.stage import METRICS_NAMESPACE, FetchConfig, FetchPages
from fetch_server import MisbehavingServer, html_route, redirect_route

pytestmark = pytest.mark.timeout(60)

PAGE = "<html><body><p>Beam page</p></body></html>"


@pytest.fixture
def server() -> Iterator[MisbehavingServer]:
    with MisbehavingServer("127.0.0.1") as srv:
        srv.routes["/ok"] = html_route(PAGE)
        srv.routes["/ok2"] = html_route(PAGE)
        srv.routes["/moved"] = redirect_route("/ok")
        srv.routes["/meta"] = redirect_route("http://169.254.169.254/latest/meta-data/")
        srv.routes["/png"] = html_route(b"\x89PNG\r\n\x1a\n\0\0", content_type="image/png")
        srv.routes["/boom"] = html_route("<p>BOOM</p>")
        yield srv


def _msg(url: str, offset: int, **kw: object) -> InputMessage:
    return InputMessage(url=url, ref=SourceRef(topic="urls", partition=0, offset=offset), raw=url, **kw)


def test_fetch_pages_routes_pages_and_dead_letters(server: MisbehavingServer, monkeypatch: pytest.MonkeyPatch) -> None:
    real_decode = fetch_module.decode_html

    def exploding_decode(body: bytes, content_type: str | None = None) -> tuple[str, str]:
        if b"BOOM" in body:  # stands in for any bug in the stage: it must cost one message only
            raise RuntimeError("kaboom")
        return real_decode(body, content_type)

    monkeypatch.setattr(fetch_module, "decode_html", exploding_decode)
    config = FetchConfig(connect_timeout=1, read_timeout=1, total_timeout=2, retries=0, per_host_delay=0,
                         allowed_networks=("127.0.0.1/32",), batch_size=3)
    messages = [
        _msg(server.url("/ok"), 0),
        _msg(server.url("/moved"), 1),
        _msg(server.url("/missing"), 2),
        _msg(server.url("/meta"), 3),
        _msg(server.url("/png"), 4),
        _msg("ftp://example.com/x", 5),
        _msg(server.url("/prescraped"), 6, html="<p>given</p>"),
        _msg(server.url("/boom"), 7),
        _msg(server.url("/ok2"), 8),
    ]
    p = BeamTestPipeline()
    pages, dead = p | beam.Create(messages) | FetchPages(config)
    assert_that(
        pages | "PageKeys" >> beam.Map(lambda pg: (pg.message.ref.offset, pg.final_url.rsplit("/", 1)[-1], pg.prescraped)),
        equal_to([(0, "ok", False), (1, "ok", False), (6, "prescraped", True), (8, "ok2", False)]),
        label="pages",
    )
    assert_that(
        dead | "DeadKeys" >> beam.Map(lambda d: (d.ref.offset, d.record.reason, d.record.topic, d.record.input is not None)),
        equal_to([(2, "http_4xx", "urls", True), (3, "blocked_address", "urls", True),
                  (4, "not_html", "urls", True), (5, "unsupported_scheme", "urls", True),
                  (7, "internal", "urls", True)]),
        label="dead",
    )
    result = p.run()
    result.wait_until_finish()
    counters = {
        r.key.metric.name: r.committed
        for r in result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))["counters"]
    }
    assert counters["fetch_pages"] == 3 and counters["fetch_prescraped"] == 1 and counters["fetch_dead"] == 5
    assert counters["fetch_dead_blocked_address"] == 1 and counters["fetch_status_4xx"] == 1
    assert counters["fetch_bytes"] == 2 * len(PAGE) + len(PAGE)
    assert server.seen("/prescraped") == []


def test_fetch_pages_is_picklable() -> None:
    import pickle

    stage = FetchPages(dataclasses.replace(FetchConfig(), per_host_delay=0.5))
    assert pickle.loads(pickle.dumps(stage)).config.per_host_delay == 0.5
