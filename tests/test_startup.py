"""`copydesk run`'s start-up work that needs no Beam (pipelines/startup.py): the flags parsed
without Beam agree with CopydeskOptions, the forkserver preload agrees with the pool's, and
the view cache of the job's options returns the same values as Beam's own views."""

from __future__ import annotations

import threading

import pytest

from copydesk.pipelines.flags import parse_flags
from copydesk.pipelines.startup import FORKSERVER_PRELOAD, ConfigError, Prestart


def test_flags_without_beam_agree_with_copydesk_options() -> None:
    from apache_beam.options.pipeline_options import PipelineOptions

    from copydesk.pipelines.options import CopydeskOptions

    argv = ["--bootstrap-servers", "h:1", "--input-topic", "a,b", "--output_topic", "o", "--dry-run",
            "--max-read-ahead", "7", "--runner", "PrismRunner", "--streaming"]
    plain = vars(parse_flags(argv))
    beam = PipelineOptions(argv).view_as(CopydeskOptions)
    for name, value in plain.items():
        assert getattr(beam, name) == value, name
    assert plain["kafka_bootstrap_servers"] == "h:1" and plain["max_read_ahead"] == 7


def test_forkserver_preload_is_the_pools() -> None:
    import multiprocessing as mp

    from copydesk.transforms.extract import pool

    ctx = pool._context("forkserver") if "forkserver" in mp.get_all_start_methods() else None
    if ctx is None:
        return
    from multiprocessing import forkserver

    assert tuple(forkserver._forkserver._preload_modules) == FORKSERVER_PRELOAD


def test_prestart_begins_nothing_for_invalid_options() -> None:
    pre = Prestart(["--input-topic", "t", "--output-topic", "o", "--dead-letter-topic", "d"], threading.Event())
    assert pre.checks is None and pre.prism is None  # no --bootstrap-servers: validate refuses
    pre.close()


def test_broker_checks_fail_on_a_missing_topic(kafka) -> None:
    from copydesk.pipelines.startup import BrokerChecks

    argv = ["--bootstrap-servers", kafka.bootstrap, "--input-topic", "no-such-topic", "--output-topic", "o",
            "--dead-letter-topic", "d", "--extract-workers", "0"]
    checks = BrokerChecks(parse_flags(argv), threading.Event(), 30.0)
    try:
        checks.result()
    except ConfigError as exc:
        assert "no-such-topic" in str(exc)
    else:
        raise AssertionError("a missing topic must fail the checks")


def test_cached_views_are_beams_views() -> None:
    from apache_beam.options.pipeline_options import StandardOptions, TypeOptions

    from copydesk.pipelines.options import CopydeskOptions
    from copydesk.pipelines.pipeline import pipeline_options

    options = pipeline_options(["--input-topic", "t", "--runner", "PrismRunner"])
    assert options.view_as(StandardOptions) is options.view_as(StandardOptions)
    options.view_as(StandardOptions).streaming = True
    assert options.view_as(StandardOptions).streaming is True
    assert options.get_all_options()["streaming"] is True
    assert options.view_as(CopydeskOptions).input_topic == "t"
    assert options.view_as(TypeOptions).pipeline_type_check is True
    import pickle

    again = pickle.loads(pickle.dumps(options))
    assert again.view_as(StandardOptions).streaming is True


@pytest.mark.integration
def test_copydesk_run_fails_before_the_job_starts_when_a_topic_is_missing(broker, topics, producer) -> None:
    """The broker checks now run beside Beam's import and the pipeline's building: a missing
    output topic must still stop `copydesk run` (default runner) with its message and exit 2
    before any pipeline starts or any offset is read or committed."""
    import subprocess
    import sys

    from kafka import KafkaConsumer, TopicPartition

    from conftest import cli_env

    t = topics("in", "dead")
    producer.send(t["in"], b'{"url": "http://127.0.0.1:9/a"}').get(timeout=30)
    group = f"g-{t['in']}"
    proc = subprocess.run([sys.executable, "-m", "copydesk.pipelines.cli", "run", "--bootstrap-servers",
                           broker.bootstrap, "--input-topic", t["in"], "--group-id", group,
                           "--output-topic", "no-such-output", "--dead-letter-topic", t["dead"],
                           "--extract-workers", "0"],
                          env=cli_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "topics do not exist" in proc.stderr and "no-such-output" in proc.stderr, proc.stderr[-3000:]
    assert "streaming pipeline started" not in proc.stderr
    assert "reading " not in proc.stderr  # the reader never ran
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group, enable_auto_commit=False)
    try:
        assert consumer.committed(TopicPartition(t["in"], 0)) is None
    finally:
        consumer.close()
