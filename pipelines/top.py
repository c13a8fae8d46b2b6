"""``copydesk top``: a live terminal view of a running job's Prometheus endpoint (no Beam)."""

from __future__ import annotations

import time

def scrape(url: str, timeout: float = 5.0) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples of a Prometheus text endpoint, keyed by (sample name, sorted labels)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=timeout) as resp:
        text = resp.read().decode("utf-8")
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def _sum(samples, name: str, **match: str) -> float:
    return sum(v for (n, labels), v in samples.items()
               if n == name and all(dict(labels).get(k) == want for k, want in match.items()))


def render_top(prev, cur, seconds: float, url: str) -> str:
    """The ``copydesk top`` screen: rate per stage, lag per partition, errors by reason."""
    dt = max(seconds, 1e-9)

    def rate(name: str, **match: str) -> float:
        return max(0.0, _sum(cur, name, **match) - _sum(prev, name, **match)) / dt

    lines = [f"copydesk top — {url} — {time.strftime('%H:%M:%S')} — rates over {seconds:.1f}s", ""]
    lines.append(f"{'STAGE':<8}{'IN/s':>10}{'OUT/s':>10}{'TOTAL OUT':>12}")
    for stage, in_name in (("read", None), ("parse", "in"), ("fetch", "in"), ("extract", "in"), ("dedup", "in"),
                           ("write", None)):
        r_in = rate("copydesk_stage_records_total", stage=stage, direction=in_name) if in_name else float("nan")
        r_out = rate("copydesk_stage_records_total", stage=stage, direction="out")
        total = _sum(cur, "copydesk_stage_records_total", stage=stage, direction="out")
        in_txt = "-" if in_name is None else f"{r_in:.1f}"
        lines.append(f"{stage:<8}{in_txt:>10}{r_out:>10.1f}{total:>12.0f}")
    dead = rate("copydesk_dead_letters_total")
    fetched_bytes = rate("copydesk_fetch_bytes_total")
    lat_n = rate("copydesk_fetch_latency_seconds_count")
    lat = (rate("copydesk_fetch_latency_seconds_sum") / lat_n) if lat_n else 0.0
    lines += ["", f"dead letters/s {dead:.2f}   fetched {fetched_bytes / 1024:.1f} KiB/s   "
                  f"mean fetch latency {lat * 1000:.0f} ms   runs {_sum(cur, 'copydesk_runs_total'):.0f}"]
    ext_n = rate("copydesk_extract_duration_seconds_count")
    ext = (rate("copydesk_extract_duration_seconds_sum") / ext_n) if ext_n else 0.0
    dedup_in = rate("copydesk_dedup_records_total")
    dups = rate("copydesk_dedup_duplicates_total")
    ratio = f"{100 * dups / dedup_in:.0f}%" if dedup_in else "-"
    lines.append(f"fetch    in flight {_sum(cur, 'copydesk_fetch_in_flight'):.0f} now "
                 f"(peak {_sum(cur, 'copydesk_fetch_in_flight_peak'):.0f} last run)   "
                 f"backoff waits/s {rate('copydesk_fetch_backoff_waits_total'):.2f}   "
                 f"Retry-After waits/s {rate('copydesk_fetch_retry_after_waits_total'):.2f}")
    lines.append(f"         circuits opened {_sum(cur, 'copydesk_fetch_circuit_opened_total'):.0f} total, "
                 f"{_sum(cur, 'copydesk_fetch_circuit_open_hosts'):.0f} hosts open after the last run")
    lines.append(f"extract  mean {ext * 1000:.0f} ms   max {_sum(cur, 'copydesk_extract_duration_max_seconds') * 1000:.0f} ms"
                 f" (last run)   short articles/s {rate('copydesk_extract_short_articles_total'):.2f}")
    lines.append(f"dedup    duplicates {ratio} of records   new clusters/s {rate('copydesk_dedup_new_clusters_total'):.2f}")
    last = _sum(cur, "copydesk_last_run_timestamp_seconds")
    if last:
        lines.append(f"last run {time.time() - last:.0f}s ago, took {_sum(cur, 'copydesk_last_run_duration_seconds'):.1f}s")
    lines += ["", "LAG (topic partition: end - committed)"]
    lag = [(dict(labels), v) for (n, labels), v in sorted(cur.items()) if n == "copydesk_consumer_lag"]
    if not lag:
        lines.append("  (not measured yet)")
    for labels, v in lag:
        lines.append(f"  {labels.get('topic')} {labels.get('partition')}: {v:.0f}")
    lines.append(f"  total: {sum(v for _, v in lag):.0f}")
    lines += ["", "EXTRACTION HEALTH (domains by bad extractions in their window: empty, short, failed)"]
    ratios = {dict(l).get("domain"): v for (n, l), v in cur.items() if n == "copydesk_domain_extraction_bad_ratio"}
    sizes = {dict(l).get("domain"): v for (n, l), v in cur.items() if n == "copydesk_domain_extractions"}
    worst = sorted(ratios, key=lambda d: (-ratios[d] * sizes.get(d, 0), -ratios[d], d))[:5]
    if not worst:
        lines.append("  (no extraction yet)")
    for d in worst:
        n = sizes.get(d, 0)
        lines.append(f"  {d:<32}{100 * ratios[d]:>5.0f}% bad of {n:.0f}")
    lines.append(f"  domains tracked: {_sum(cur, 'copydesk_domains_tracked'):.0f}")
    lines += ["", "ERRORS (total, by reason)"]
    errs = [(f"fetch {dict(l).get('reason')}", v) for (n, l), v in cur.items() if n == "copydesk_fetch_dead_letters_total"]
    errs += [(f"extract {dict(l).get('reason')}", v) for (n, l), v in cur.items()
             if n == "copydesk_extract_dead_letters_total"]
    errs.append(("parse rejected", _sum(cur, "copydesk_parse_messages_rejected_total")))
    errs.append(("commit errors", _sum(cur, "copydesk_commit_errors_total")))
    for label, v in sorted(errs, key=lambda x: -x[1]):
        if v:
            lines.append(f"  {label:<28}{v:>8.0f}")
    if not any(v for _, v in errs):
        lines.append("  none")
    return "\n".join(lines) + "\n"


def top(url: str, interval: float = 2.0, once: bool = False, out=None) -> int:
    import sys

    out = out or sys.stdout
    try:
        prev = scrape(url)
    except OSError as exc:
        print(f"copydesk top: cannot read {url}: {exc}", file=sys.stderr)
        return 1
    t_prev = time.monotonic()
    while True:
        time.sleep(interval)
        try:
            cur = scrape(url)
        except OSError as exc:
            print(f"copydesk top: cannot read {url}: {exc}", file=sys.stderr)
            return 1
        now = time.monotonic()
        screen = render_top(prev, cur, now - t_prev, url)
        if once:
            out.write(screen)
            out.flush()
            return 0
        out.write("\x1b[H\x1b[2J" + screen)
        out.flush()
        prev, t_prev = cur, now
