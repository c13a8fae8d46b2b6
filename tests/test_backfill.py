"""Backfills and delivery guarantees (issue #7), against real Apache Kafka and the local
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


# --------------------------------------------------------------------------- 2. raw-pages replay


def test_replay_raw_pages_archive_reextracts_without_fetching(broker, topics, producer):
    import signal
    import subprocess
    import sys
    import time

    from conftest import cli_env, consume
    from copydesk.pipelines.demo.site import SiteServer

    t = topics("in", "raw", "out", "dead", "out2", "dead2", partitions=2)
    site = SiteServer().start()
    try:
        urls = _site_urls(site, 6, "a")
        sent = _send(producer, t["in"], urls + [site.url("/no-such-page.html").encode()])
        cmd = [sys.executable, "-m", "copydesk.pipelines.cli", "run",
               "--bootstrap-servers", broker.bootstrap, "--input-topic", t["in"], "--group-id", f"g-{t['in']}",
               "--output-topic", t["out"], "--dead-letter-topic", t["dead"], "--raw-pages-topic", t["raw"],
               "--allow-networks", "127.0.0.1/32", "--per-host-delay", "0", "--per-host-concurrency", "8",
               "--batch-seconds", "3", "--extract-workers", "0"]
        proc = subprocess.Popen(cmd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                recs, dead = _outputs(broker, t["out"]), _outputs(broker, t["dead"])
                if len(recs) + len(dead) >= len(sent):
                    break
                time.sleep(1.0)
        finally:
            proc.send_signal(signal.SIGTERM)
            log = proc.communicate(timeout=60)[0].decode(errors="replace")
        assert len(recs) == len(urls) and len(dead) == 1, log[-3000:]
    finally:
        site.stop()  # from here on, a fetch of any of these URLs would fail (connection refused)

    archive = [orjson.loads(r.value) for r in consume(broker.bootstrap, t["raw"], 10**9, timeout=2.0)]
    assert len(archive) == len(urls)  # the 404 was never a fetched page
    assert sorted((a["partition"], a["offset"]) for a in archive) == sorted(
        (r["partition"], r["offset"]) for r in recs)

    code, out = _replay(broker, {"in": t["raw"]}, "--source", "raw-pages", "--from-beginning",
                        "--replay-group", f"{t['raw']}-re", "--output-topic", t["out2"],
                        "--dead-letter-topic", t["dead2"], "--chunk-records", "2")
    assert code == 0, out[-3000:]
    assert "raw-pages archive" in out
    again, dead2 = _outputs(broker, t["out2"]), _outputs(broker, t["dead2"])
    assert dead2 == [], dead2  # nothing was fetched: the site is down, a fetch would be a dead letter
    assert sorted(r["id"] for r in again) == sorted(r["id"] for r in recs)
    by_id = {r["id"]: r for r in recs}
    for r in again:
        first = by_id[r["id"]]
        assert (r["text"], r["title"], r["canonical_url"], r["fetched_at"]) == (
            first["text"], first["title"], first["canonical_url"], first["fetched_at"])
        assert r["topic"] == t["raw"]  # the position read (and committed) is the archive's
    ends = {p: max([a_off for (a_p, a_off) in
                    [(r["partition"], r["offset"]) for r in again] if a_p == p], default=-1) + 1 for p in range(2)}
    committed = _committed(broker.bootstrap, f"{t['raw']}-re", t["raw"], 2)
    assert {p: c for p, c in committed.items() if c is not None} == {p: e for p, e in ends.items() if e > 0}
    print(f"\nraw-pages replay: {len(sent)} messages -> {len(recs)} records + 1 dead letter; archive "
          f"{len(archive)} pages -> {len(again)} records with the site stopped, 0 dead letters")


# --------------------------------------------------------------------------- 3. poison messages


def test_poison_message_that_kills_the_job_is_dead_lettered_after_max_attempts(broker, topics, producer, site,
                                                                                  tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from conftest import cli_env
    from copydesk.transforms.parse.messages import TEST_CRASH_ENV, TEST_CRASH_EXIT_CODE
    from test_crash import _committed as committed_of, _seen

    t = topics("in", "out", "dead", "attempts", partitions=2)
    group = f"g-{t['in']}"
    good = _site_urls(site, 12, "p")
    pill = "poison-pill-7"
    poison = orjson.dumps({"url": site.url("/no-such-page.html?pill=1"), "source": pill})
    sent = _send(producer, t["in"], good[:3] + [poison] + good[3:6], partition=0)
    sent += _send(producer, t["in"], good[6:], partition=1)
    poison_at = sent[3]
    assert poison_at == (0, 3)

    env = cli_env()
    env[TEST_CRASH_ENV] = pill  # the test hook: the parse stage os._exit()s on this message
    cmd = [sys.executable, "-m", "copydesk.pipelines.cli", "run",
           "--bootstrap-servers", broker.bootstrap, "--input-topic", t["in"], "--group-id", group,
           "--output-topic", t["out"], "--dead-letter-topic", t["dead"], "--attempts-topic", t["attempts"],
           "--max-attempts", "3", "--allow-networks", "127.0.0.1/32", "--per-host-delay", "0",
           "--per-host-concurrency", "8", "--batch-seconds", "10", "--extract-workers", "0"]
    # --batch-seconds 10, not 3: a micro-batch's deadline is set before Beam starts (2-4 s on a
    # loaded machine), and a batch cut by it can read partition 1 without reaching the poison
    # message on partition 0, so a death would follow written output. The runs end when the
    # partitions are idle (1 s) anyway.

    def start(i: int):
        fh = open(tmp_path / f"run{i}.log", "wb")
        return subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True), fh

    # A supervisor, as Kubernetes or systemd would be: restart the job whenever it dies.
    deaths: list[int] = []
    covered_at_death: list[int] = []
    proc, fh = start(0)
    deadline = time.monotonic() + 300
    seen: list = []
    try:
        while time.monotonic() < deadline:
            seen = _seen(broker, t)[0]
            if set(sent) <= set(seen):
                break
            if proc.poll() is not None:
                fh.close()
                deaths.append(proc.returncode)
                covered_at_death.append(len(set(seen)))
                assert proc.returncode == TEST_CRASH_EXIT_CODE, (tmp_path / f"run{len(deaths) - 1}.log").read_text()
                proc, fh = start(len(deaths))
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        fh.close()
    logs = "\n".join((tmp_path / f"run{i}.log").read_text(errors="replace") for i in range(len(deaths) + 1))
    assert code == 0, logs[-4000:]

    recs = _outputs(broker, t["out"])
    dead = _outputs(broker, t["dead"])
    assert {(d["partition"], d["offset"]) for d in dead} == {poison_at}, (dead, logs[-4000:])
    pd = dead[0]
    assert (pd["reason"], pd["stage"]) == ("poison", "job")
    assert pill in pd["input"] and pd["url"].endswith("/no-such-page.html?pill=1")
    # Dead-lettered only after --max-attempts (3) deaths with the message in a full micro-batch,
    # then at least one more death with the message read alone (the isolation's last window).
    assert len(deaths) >= 3 + 1, deaths
    assert pd["attempts"] == len(deaths), (pd, deaths)
    assert all(c == 0 for c in covered_at_death[:3])  # the partition was blocked until then
    # Every other offset has its record; the group committed past the poison to the end.
    assert sorted((r["partition"], r["offset"]) for r in recs) == sorted(set(sent) - {poison_at})
    ends = {p: max(o for q, o in sent if q == p) + 1 for p in range(2)}
    assert committed_of(broker, group, t["in"], 2) == ends
    print(f"\npoison: {len(sent)} offsets; the job died {len(deaths)} times (exit {TEST_CRASH_EXIT_CODE}); "
          f"offset {poison_at} dead-lettered as poison with attempts={pd['attempts']}; "
          f"{len(recs)} records for the other {len(sent) - 1} offsets; committed {committed_of(broker, group, t['in'], 2)}")
