"""The README's commands, run as a user would: the demo, run --help, and a batch file run."""

from __future__ import annotations

import re
import subprocess
import sys

import orjson
import pytest

from conftest import cli_env
from copydesk.pipelines.demo.site import site_root
from copydesk.schemas.codec import validate_article, validate_dead_letter

CLI = [sys.executable, "-m", "copydesk.pipelines.cli"]


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("prism", ["found", "off"])
def test_demo_prints_clean_records_one_ap_cluster_and_a_summary(prism):
    """On Prism where a binary is found, and as on a machine with only Python (no binary, no
    download: ``COPYDESK_PRISM=off``), on the micro-batch fallback."""
    env = cli_env()
    if prism == "off":
        env["COPYDESK_PRISM"] = "off"
    proc = subprocess.run(CLI + ["demo"], env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    m = re.search(r"summary: (\d+) messages -> (\d+) records \((\d+) stories, (\d+) duplicates, "
                  r"(\d+) multi-outlet clusters\), (\d+) dead letters", out)
    assert m, out[-2000:]
    messages, records, stories, dups, multi, dead = map(int, m.groups())
    assert records + dead == messages
    assert dead == 5 and records == messages - 5
    # The AP story carried by three outlets (plus a pre-scraped copy) is one cluster.
    blocks = out.split("=" * 100)
    ap_titles = ["Floods force thousands from their homes in Oregon timber town",
                 "Floodwaters force thousands from homes in Oregon town after levees fail",
                 "Oregon river hits record high; thousands evacuated as levees give way"]
    clusters = set()
    for title in ap_titles:
        block = next(b for b in blocks if title in b)
        clusters.add(re.search(r"cluster: (\S+)", block).group(1))
        assert "wire: AP" in block
    assert len(clusters) == 1, clusters
    # ... carried by three outlets, each its own site (host name), named in the cluster's outlets.
    outlets = set()
    for b in blocks:
        if any(t in b for t in ap_titles):
            outlets |= set(re.search(r"outlets: (.*)", b).group(1).split(", "))
    assert {"continental-news.test", "morning-ledger.test", "riverside-gazette.test"} <= outlets, outlets
    assert stories == records - dups and multi >= 1
    # Boilerplate from the templates is gone from the printed text.
    for junk in ("Share this article", "ADVERTISEMENT", "You might also like", "Copyright Tom Brandt/AP"):
        assert junk not in out, junk
    for reason in ("http_4xx", "unsupported_scheme", "bad_url", "malformed", "no_url"):
        assert reason in out


def test_run_help_names_every_env_variable():
    proc = subprocess.run(CLI + ["run", "--help"], env=cli_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for flag, env in (("--bootstrap-servers", "COPYDESK_BOOTSTRAP_SERVERS"), ("--input-topic", "COPYDESK_INPUT_TOPIC"),
                      ("--group-id", "COPYDESK_GROUP_ID"), ("--input-file", "COPYDESK_INPUT_FILE"),
                      ("--output-topic", "COPYDESK_OUTPUT_TOPIC"), ("--dead-letter-file", "COPYDESK_DEAD_LETTER_FILE")):
        assert flag in proc.stdout and env in proc.stdout


def test_run_refuses_a_job_without_a_dead_letter_output(tmp_path):
    inp = tmp_path / "in.txt"
    inp.write_text("http://example.com/\n")
    proc = subprocess.run(CLI + ["run", "--input-file", str(inp), "--output-file", str(tmp_path / "o.jsonl")],
                          env=cli_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "dead-letter" in proc.stderr


@pytest.mark.slow
def test_batch_file_run_with_env_configuration(tmp_path, site):
    paths = [p for p in (site_root() / "urls.txt").read_text().split() if p]
    lines = [site.url(p) for p in paths[:4]]
    lines += [orjson.dumps({"url": site.url(paths[4]), "source": "feed"}).decode(), "not a url", "",
              site.url("/missing.html")]
    inp = tmp_path / "urls.jsonl"
    inp.write_text("\n".join(lines) + "\n")
    out, dead = tmp_path / "records.jsonl", tmp_path / "dead.jsonl"
    env = cli_env() | {"COPYDESK_INPUT_FILE": str(inp), "COPYDESK_OUTPUT_FILE": str(out),
                       "COPYDESK_DEAD_LETTER_FILE": str(dead), "COPYDESK_ALLOW_NETWORKS": "127.0.0.1/32",
                       "COPYDESK_PER_HOST_DELAY": "0"}
    proc = subprocess.run(CLI + ["run", "--extract-workers", "0"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [orjson.loads(x) for x in out.read_text().splitlines()]
    deads = [orjson.loads(x) for x in dead.read_text().splitlines()]
    assert len(records) == 5 and len(deads) == 3  # the blank line is an input too
    for r in records:
        validate_article(r)
    for d in deads:
        validate_dead_letter(d)
    assert sorted(d["reason"] for d in deads) == ["bad_url", "http_4xx", "malformed"]
    assert {d["offset"] for d in deads} == {5, 6, 7}  # the line index in the input file
    assert all(d["topic"] == f"file:{inp}" for d in deads)
