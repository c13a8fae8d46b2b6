"""``copydesk run --log-format json``: every line on stderr is one JSON object (including the
lines of the spawned extraction workers), and a warning about one record carries its source
topic/partition/offset, url and reason as fields. A real ``copydesk run`` process on a file."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import cli_env
from copydesk.transforms.extract.core import TEST_HOOKS_ENV

ARTICLE = ("<html><head><title>Harbour reopens</title></head><body><article><h1>Harbour reopens</h1>"
           + "<p>The harbour reopened on Monday after three weeks of repairs to the sea wall, officials said.</p>" * 12
           + "</article></body></html>")


def test_json_logs_are_json_lines_and_record_warnings_carry_the_source(tmp_path):
    src = tmp_path / "in.jsonl"
    lines = [
        # extraction raises inside the worker (test hook) -> extract_error dead letter + warning
        json.dumps({"url": "https://a.example/raise", "html": "<!--copydesk-test:raise--><html><body><p>x</p></body></html>"}),
        # nothing to extract: trafilatura logs "discarding data" inside the worker process
        json.dumps({"url": "https://b.example/empty", "html": "<html><body></body></html>"}),
        "not a url",
        json.dumps({"url": "https://c.example/story", "html": ARTICLE}),
    ]
    src.write_text("\n".join(lines) + "\n")
    env = cli_env()
    env[TEST_HOOKS_ENV] = "1"
    res = subprocess.run(
        [sys.executable, "-m", "copydesk.pipelines.cli", "run", "--input-file", str(src),
         "--output-file", str(tmp_path / "out.jsonl"), "--dead-letter-file", str(tmp_path / "dead.jsonl"),
         "--extract-workers", "1", "--log-format", "json"],
        env=env, capture_output=True, timeout=300)
    err = res.stderr.decode()
    assert res.returncode == 0, err[-3000:]
    docs = []
    for line in err.splitlines():
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON line on stderr: {line!r}") from None
        assert {"ts", "level", "logger", "message"} <= set(doc), doc
        docs.append(doc)
    warning = [d for d in docs if d["level"] == "WARNING" and d.get("url") == "https://a.example/raise"]
    assert warning, docs
    w = warning[0]
    assert (w["topic"], w["partition"], w["offset"]) == (f"file:{src}", 0, 0), w
    assert w["reason"] == "extract_error" and w["stage"] == "extract", w
    assert "test hook: raise" in w["message"]
    dead = [json.loads(x) for x in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert sorted(d["reason"] for d in dead) == ["bad_url", "empty", "extract_error"]
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 1
