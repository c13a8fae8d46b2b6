"""copydesk's own flags, without Beam: the table behind ``CopydeskOptions`` (options.py) and
a plain parse of them, which ``copydesk run`` uses to start what needs no Beam (the Prism
binary, the broker checks, the extraction forkserver: pipelines/startup.py) while Beam is
still being imported.

Every flag falls back to an environment variable (``COPYDESK_<NAME>``) and ``--help`` says
which.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

# (flag, type, default, help). The env variable is COPYDESK_ + upper-cased flag with '_'.
_FLAGS: list[tuple[str, Any, Any, str]] = [
    # input
    ("bootstrap_servers", str, None, "Kafka bootstrap servers, host:port[,host:port]"),
    ("input_topic", str, None, "input topic(s) of URLs, comma-separated"),
    ("group_id", str, "copydesk", "consumer group whose committed offsets the job resumes from"),
    ("start_from", str, "committed", "where a partition without a committed offset starts, like Kafka's "
                                     "auto.offset.reset: earliest|latest (committed = earliest); a committed "
                                     "offset always wins"),
    ("partition_discovery_seconds", float, 30.0, "streaming run: list the input topics' partitions again this "
                                                 "often; partitions added meanwhile are read from their start"),
    ("max_read_ahead", int, 2000, "streaming run: a partition's reader waits while it is this many offsets past "
                                  "the group's committed offset (0 = no limit); the source's back-pressure"),
    ("max_uncommitted_records", int, 1000, "streaming run: the reader waits while this many records it read are "
                                           "not committed yet, over all partitions (0 = no limit); bounds the "
                                           "job's memory with --max-uncommitted-mb"),
    ("max_uncommitted_mb", float, 64.0, "streaming run: the reader waits while the records it read and the group "
                                        "has not committed carry this many MiB of message payload (0 = no limit; "
                                        "a larger message is read alone)"),
    ("input_file", str, None, "batch input: a file of JSON lines or one URL a line (bounded run)"),
    ("max_message_bytes", int, 8 * 1024 * 1024, "larger input messages are dead letters (message_too_large)"),
    # output
    ("output_topic", str, None, "topic for article records (keyed by record id)"),
    ("dead_letter_topic", str, None, "topic for dead-letter records"),
    ("output_file", str, None, "JSON-lines file for article records (local runs)"),
    ("dead_letter_file", str, None, "JSON-lines file for dead letters (local runs)"),
    ("raw_pages_topic", str, None, "optional archive of every fetched page, for re-extraction without fetching"),
    ("raw_pages_input", bool, False, "the input is a raw-pages archive (an earlier run's --raw-pages-topic): "
                                     "re-extract its pages without fetching (copydesk replay --source raw-pages)"),
    ("fingerprint_topic", str, None, "compacted topic of dedup fingerprints, read on start-up to rebuild the "
                                     "dedup index after a restart on the local runner"),
    ("kafka_io", str, "python", "Kafka connector: python (kafka-python SDF reader and sink, every runner) or java "
                                "(Beam's cross-language ReadFromKafka/WriteToKafka for Flink/Dataflow; needs the "
                                "expansion-service jar; offsets then commit on checkpoint finalisation)"),
    ("kafka_config", str, None, "extra kafka-python client settings as key=value,key=value "
                                "(security_protocol, sasl_mechanism, ...); masked in logs"),
    # fetch
    ("max_in_flight", int, None, "concurrent HTTP requests per worker"),
    ("per_host_concurrency", int, None, "concurrent requests to one host"),
    ("per_host_delay", float, None, "minimum seconds between two requests to one host"),
    ("user_agent", str, None, "User-Agent header (include a contact URL)"),
    ("fetch_timeout", float, None, "time limit of one attempt of one request, seconds"),
    ("fetch_deadline", float, None, "time limit of one message's whole fetch (every hop, retry and backoff; not "
                                    "its wait for a polite turn at the host), seconds (default 60)"),
    ("max_page_bytes", int, None, "larger pages (raw or decompressed) are dead letters (too_large)"),
    ("max_redirects", int, None, "more redirects are dead letters (too_many_redirects)"),
    ("ignore_robots", bool, False, "do not fetch or honour robots.txt (only for sites you own)"),
    ("allow_private", bool, False, "allow fetching private, loopback and link-local addresses (on-premise)"),
    ("allow_networks", str, None, "comma-separated CIDRs that may be fetched although private, e.g. 127.0.0.1/32"),
    ("resolve", str, None, "comma-separated HOST=ADDRESS pins, like curl --resolve: HOST is not looked up in DNS; "
                           "ADDRESS is still checked against the private-address guard"),
    # extract
    ("extract_workers", int, None, "extraction worker processes (default: one per core; 0 = in-process)"),
    ("extract_timeout", float, None, "per-page extraction time limit, seconds"),
    ("extract_memory_mb", int, None, "address space an extraction worker may add for one page, MiB (default 512; "
                                     "0 = no limit); a page past it is too_large and the worker is replaced"),
    ("extract_compare", str, None, "when trafilatura's readability/justext comparison runs: auto (when the quick "
     "result looks wrong; the default) or always (trafilatura's default mode; more CPU, lower F1 on both page "
     "sets, docs/extract.md)"),
    # dedup
    ("drop_duplicates", bool, False, "emit only canonical records (duplicates are annotated by default)"),
    ("force", bool, False, "reprocess what dedup would skip: every record is emitted (still annotated) even "
                           "when --drop-duplicates would drop it; one message asks the same with \"force\": true"),
    ("dedup_horizon_hours", float, None, "how long stories are remembered for de-duplication"),
    ("dedup_threshold", float, None, "near-duplicate Jaccard threshold"),
    # operations
    ("attempts_topic", str, None, "compacted topic where the local runner records, before each micro-batch, how "
                                  "many processes died reading from each committed offset; with it a message that "
                                  "kills the job --max-attempts times is isolated and dead-lettered (poison)"),
    ("max_attempts", int, 3, "process deaths at the same committed offset before its messages are isolated "
                             "(needs --attempts-topic)"),
    ("metrics_port", int, None, "serve Prometheus metrics on this port (local runner)"),
    ("dry_run", bool, False, "run everything but write nothing and commit no offsets"),
]


def env_name(flag: str) -> str:
    return "COPYDESK_" + flag.upper()


def _env_default(flag: str, typ: Any, default: Any) -> Any:
    raw = os.environ.get(env_name(flag))
    if raw is None or raw == "":
        return default
    if typ is bool:
        return raw.strip().lower() in ("1", "true", "yes", "on")
    return typ(raw)


# Beam's own options already own these underscore spellings (--bootstrap_servers of the Kafka
# Streams runner, --user_agent, --dry_run of the test options): copydesk's take only the
# dashed spelling and a prefixed attribute name, so both coexist in one PipelineOptions.
_BEAM_CLASHES = {"bootstrap_servers": "kafka_bootstrap_servers", "user_agent": "fetch_user_agent",
                 "dry_run": "copydesk_dry_run"}


def option_dest(flag: str) -> str:
    return _BEAM_CLASHES.get(flag, flag)


def add_arguments(parser) -> None:
    """Every copydesk flag on an argparse parser (Beam's, or a plain one)."""
    for flag, typ, default, text in _FLAGS:
        env = env_name(flag)
        dflt = _env_default(flag, typ, default)
        help_text = f"{text} [env: {env}]" + (f" (default: {default})" if default not in (None, False) else "")
        names = [f"--{flag.replace('_', '-')}"]
        if flag not in _BEAM_CLASHES:
            names.append(f"--{flag}")
        if typ is bool:
            parser.add_argument(*names, dest=option_dest(flag), action="store_true", default=dflt, help=help_text)
        else:
            parser.add_argument(*names, dest=option_dest(flag), type=typ, default=dflt, help=help_text)


def parse_flags(argv: list[str]) -> argparse.Namespace:
    """copydesk's flags in ``argv`` (the others ignored), as ``CopydeskOptions`` would see them."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_arguments(parser)
    known, _ = parser.parse_known_args(argv)
    return known


def parse_kafka_config(text: str | None) -> tuple[tuple[str, Any], ...]:
    if not text:
        return ()
    out = []
    for item in text.split(","):
        if not item.strip():
            continue
        key, _, value = item.partition("=")
        v: Any = value.strip()
        if v.isdigit():
            v = int(v)
        elif v.lower() in ("true", "false"):
            v = v.lower() == "true"
        out.append((key.strip(), v))
    return tuple(out)


SECRET_WORDS = ("password", "secret", "token", "key")


def masked(options: dict[str, Any]) -> dict[str, Any]:
    """Options for printing: secrets inside --kafka-config are masked."""
    out = dict(options)
    if out.get("kafka_config"):
        parts = []
        for k, v in parse_kafka_config(out["kafka_config"]):
            parts.append(f"{k}=***" if any(w in k.lower() for w in SECRET_WORDS) else f"{k}={v}")
        out["kafka_config"] = ",".join(parts)
    return out
