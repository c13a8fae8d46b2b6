"""Backfills and delivery guarantees (issue #7), against a real Tansu broker and the local
sample site: ``--force`` / ``"force": true`` past ``--drop-duplicates``; replaying the
raw-pages archive without fetching; poison messages that kill the job process are isolated
and dead-lettered (``poison``) after ``--max-attempts``."""

from __future__ import annotations

import orjson
import pytest

from test_replay import _committed, _outputs, _replay, _send, _site_urls

pytestmark = [pytest.mark.integration, pytest.mark.slow]


# --------------------------------------------------------------------------- 1. --force


def test_force_reprocesses_what_drop_duplicates_would_skip(broker, topics, producer, site):
    t = topics("in", "fp", "out1", "out2", "out3", "dead", partitions=1)
    url = _site_urls(site, 1, "f")[0]
    forced = orjson.dumps({"url": url.decode(), "force": True})
    sent = _send(producer, t["in"], [url, forced, url])  # offsets 0, 1, 2: the same page three times
    assert [o for _, o in sent] == [0, 1, 2]
    common = ["--from-beginning", "--drop-duplicates", "--fingerprint-topic", t["fp"], "--chunk-records", "1",
              "--dead-letter-topic", t["dead"]]

    # One offset per chunk, the dedup index carried across chunks by the fingerprint topic:
    # offset 0 is new, 1 and 2 are exact_url duplicates of it. 2 is dropped; 1 asks for force.
    code, out = _replay(broker, t, *common, "--replay-group", f"{t['in']}-a", "--output-topic", t["out1"])
    assert code == 0, out[-3000:]
    recs = sorted(_outputs(broker, t["out1"]), key=lambda r: r["offset"])
    assert [r["offset"] for r in recs] == [0, 1], out[-2000:]
    first, again = recs
    assert first["is_canonical"] and first["duplicate_of"] is None
    assert again["id"] == first["id"] and not again["is_canonical"]
    assert again["duplicate_kind"] == "exact_url" and again["duplicate_of"] == first["id"]  # still annotated
    assert "force" not in again  # not part of the record
    # The dropped duplicate is accounted for: the replay group committed past it.
    assert _committed(broker.bootstrap, f"{t['in']}-a", t["in"], 1) == {0: 3}

    # Control: the index now knows the page, so without --force every copy is dropped,
    # except the message that carries "force": true ...
    code, out = _replay(broker, t, *common, "--replay-group", f"{t['in']}-b", "--output-topic", t["out2"])
    assert code == 0, out[-3000:]
    assert [r["offset"] for r in _outputs(broker, t["out2"])] == [1], out[-2000:]
    assert _committed(broker.bootstrap, f"{t['in']}-b", t["in"], 1) == {0: 3}

    # ... and --force reprocesses all of them, annotated as the duplicates they are.
    code, out = _replay(broker, t, *common, "--force", "--replay-group", f"{t['in']}-c",
                        "--output-topic", t["out3"])
    assert code == 0, out[-3000:]
    recs = sorted(_outputs(broker, t["out3"]), key=lambda r: r["offset"])
    assert [r["offset"] for r in recs] == [0, 1, 2], out[-2000:]
    assert all(r["duplicate_of"] == first["id"] and r["duplicate_kind"] == "exact_url" for r in recs)
    assert _outputs(broker, t["dead"]) == []
    print(f"\n--force: 3 offsets of one page; --drop-duplicates emitted offsets [0, 1] (1 forced), "
          f"a second pass [1], --force [0, 1, 2]")
