"""BrokerWatch's decisions (pipelines/broker_faults.py), without a broker: a failed micro-batch
is run again after a broker fault, a bug is raised as before, the state is logged and
reported. The real outage is in tests/test_broker_restart.py."""

from __future__ import annotations

import logging
import threading

import pytest

from copydesk.pipelines.broker_faults import BrokerWatch, is_broker_error, probe


class _Prober:
    def __init__(self, answers: list[str | None]) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(self, _kwargs) -> str | None:
        self.calls += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def _wrapped(inner: BaseException) -> Exception:
    """As Beam raises a DoFn's exception: a new exception with the original as its cause."""
    try:
        try:
            raise inner
        except BaseException as exc:
            raise RuntimeError("... [while running 'WriteRecords/ParDo(_KafkaWriteFn)']") from exc
    except RuntimeError as outer:
        return outer


def test_is_broker_error_looks_through_the_chain():
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError

    assert is_broker_error(_wrapped(KafkaTimeoutError("Unable to bootstrap from ['127.0.0.1:1']")))
    assert is_broker_error(_wrapped(KafkaConnectionError("reset")))
    assert is_broker_error(_wrapped(ConnectionRefusedError()))
    assert not is_broker_error(_wrapped(ValueError("a bug")))


def test_outage_waits_for_the_broker_then_runs_again(caplog):
    states: list[tuple[bool, int]] = []
    prober = _Prober(["refused", "refused", "refused", None])
    watch = BrokerWatch({"bootstrap_servers": ["127.0.0.1:1"]}, listener=lambda up, n: states.append((up, n)),
                        min_backoff=0.01, max_backoff=0.02, prober=prober)
    from kafka.errors import KafkaTimeoutError

    with caplog.at_level(logging.INFO, logger="copydesk.pipelines.broker_faults"):
        assert watch.run_failed(_wrapped(KafkaTimeoutError("Unable to bootstrap")), threading.Event()) is True
    assert watch.up and watch.outages == 1 and watch.errors == 2  # the failed run and its probe
    assert states[0] == (True, 0) and (False, 2) in states and states[-1] == (True, 2)
    text = caplog.text
    assert "unreachable" in text and "reachable again after an outage" in text
    assert "runs again once the broker answers" in text


def test_a_bug_is_raised_when_the_broker_answers():
    watch = BrokerWatch({"bootstrap_servers": ["127.0.0.1:1"]}, prober=_Prober([None]))
    with pytest.raises(RuntimeError):
        watch.run_failed(_wrapped(ValueError("a bug")), threading.Event())
    assert watch.errors == 0 and watch.up


def test_kafka_errors_while_the_broker_answers_are_retried_then_raised():
    from kafka.errors import KafkaTimeoutError

    watch = BrokerWatch({"bootstrap_servers": ["127.0.0.1:1"]}, prober=_Prober([None]), min_backoff=0.0,
                        max_retries_when_up=2)
    exc = _wrapped(KafkaTimeoutError("Unable to bootstrap"))
    assert watch.run_failed(exc, threading.Event()) is True
    assert watch.run_failed(exc, threading.Event()) is True
    with pytest.raises(RuntimeError):
        watch.run_failed(exc, threading.Event())
    watch.run_ok()  # a good run resets the count
    assert watch.run_failed(exc, threading.Event()) is True


def test_stop_during_the_outage_returns_false():
    from kafka.errors import KafkaConnectionError

    stop = threading.Event()
    stop.set()
    watch = BrokerWatch({"bootstrap_servers": ["127.0.0.1:1"]}, prober=_Prober(["refused"]), min_backoff=0.01)
    assert watch.run_failed(_wrapped(KafkaConnectionError("refused")), stop) is False
    assert not watch.up


def test_probe_of_a_closed_port_answers_at_once():
    from copydesk.pipelines.demo.broker import free_port

    reason = probe({"bootstrap_servers": [f"127.0.0.1:{free_port()}"]}, timeout=2.0)
    assert reason and "refused" in reason.lower()


def test_exporter_serves_the_broker_state():
    from copydesk.pipelines.metrics import Exporter

    exporter = Exporter()
    exporter.on_broker(False, 3)
    samples = {s.name: s.value for fam in exporter.collect() for s in fam.samples}
    assert samples["copydesk_broker_up"] == 0.0
    assert samples["copydesk_broker_errors_total"] == 3.0
    exporter.on_broker(True, 3)
    samples = {s.name: s.value for fam in exporter.collect() for s in fam.samples}
    assert samples["copydesk_broker_up"] == 1.0


def test_start_up_waits_for_the_broker_then_gives_up_or_stops(caplog):
    states: list[tuple[bool, int]] = []
    watch = BrokerWatch({"bootstrap_servers": ["127.0.0.1:1"]}, listener=lambda up, n: states.append((up, n)),
                        min_backoff=0.01, max_backoff=0.02, prober=_Prober(["refused", "refused", None]))
    with caplog.at_level(logging.INFO, logger="copydesk.pipelines.broker_faults"):
        assert watch.wait_until_up(threading.Event(), timeout=5) is True
    assert watch.up and watch.outages == 1 and states[-1][0] is True
    assert "unreachable" in caplog.text and "reachable again" in caplog.text
    never = BrokerWatch({"bootstrap_servers": ["127.0.0.1:1"]}, min_backoff=0.01, max_backoff=0.02,
                        prober=_Prober(["refused"]))
    assert never.wait_until_up(threading.Event(), timeout=0.1) is False and not never.up
    stopped = threading.Event()
    stopped.set()
    assert BrokerWatch({"bootstrap_servers": ["127.0.0.1:1"]}, prober=_Prober(["refused"])).wait_until_up(
        stopped, timeout=60) is False


@pytest.mark.integration
@pytest.mark.slow
def test_job_started_before_its_broker_waits_for_it(tmp_path):
    """A real job started against a port where no broker listens yet: it waits, and once a
    real Apache Kafka node comes up there (topics created), it runs and writes the record."""
    import subprocess
    import sys
    import time

    import orjson

    from conftest import cli_env, consume
    from copydesk.pipelines.demo.broker import create_topics, free_port
    from copydesk.pipelines.demo.site import SiteServer
    from realkafka import KafkaBroker

    port = free_port()
    t = {k: f"late-{port}-{k}" for k in ("in", "out", "dead")}
    with SiteServer() as site:
        proc = subprocess.Popen(
            [sys.executable, "-m", "copydesk.pipelines.cli", "run", "--bootstrap-servers", f"127.0.0.1:{port}",
             "--input-topic", t["in"], "--group-id", f"g-{port}", "--output-topic", t["out"],
             "--dead-letter-topic", t["dead"], "--allow-networks", "127.0.0.1/32", "--per-host-delay", "0",
             "--batch-seconds", "2"],
            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        broker = None
        try:
            time.sleep(4)
            assert proc.poll() is None, proc.stdout.read()  # still waiting, not crashed
            broker = KafkaBroker(port=port)
            broker.start()
            create_topics(broker.bootstrap, list(t.values()), partitions=1)
            from kafka import KafkaProducer

            producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
            path = "/continental/business/2025/03/12/container-freight-rates-fall-sixth-week.html"
            producer.send(t["in"], site.url(path).encode()).get(timeout=30)
            producer.close()
            out = [orjson.loads(r.value) for r in consume(broker.bootstrap, t["out"], 1, timeout=90)]
            assert len(out) == 1 and out[0]["url"].startswith(site.base_url)
        finally:
            proc.terminate()
            try:
                log = proc.communicate(timeout=60)[0]
            except subprocess.TimeoutExpired:
                proc.kill()
                log = proc.communicate()[0]
            if broker is not None:
                broker.close()
    assert "unreachable" in log and "reachable again" in log, log[-3000:]


def _read_live(fn, restriction, want: int, rounds: int = 40) -> tuple[list, object]:
    """Run the live reader's ``process`` as a runner does, bundle after bundle (each resumes
    from the residual of the one before), until ``want`` records or ``rounds`` bundles."""
    from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
    from apache_beam.runners.sdf_utils import RestrictionTrackerView, ThreadsafeRestrictionTracker

    from copydesk.transforms.kafka.live import _PositionsProvider

    out = []
    for _ in range(rounds):
        tracker = ThreadsafeRestrictionTracker(_PositionsProvider().create_tracker(restriction))
        out += [v.value for v in fn.process(None, tracker=RestrictionTrackerView(tracker),
                                            watermark=ManualWatermarkEstimator(None))]
        status = tracker.deferred_status()
        if status is None:
            break
        restriction = status[0]
        if len(out) >= want:
            break
    return out, restriction


@pytest.mark.integration
def test_live_reader_past_records_deleted_under_its_position(broker, topics, producer, caplog):
    """The live reader's position falls below the partition's beginning (records deleted: by
    retention, here by DeleteRecords). kafka-python's default reset would move it to the end
    without a word and skip every record still there; the reader reads on from the beginning,
    says so, and the first record's ``covers_from`` covers the gone offsets (so the commit can
    pass them, as nothing can read them any more)."""
    import time

    from kafka import TopicPartition
    from kafka.admin import KafkaAdminClient

    from copydesk.transforms.kafka.config import KafkaConfig, ReadConfig
    from copydesk.transforms.kafka.live import Positions, _ReadAllPartitionsFn

    t = topics("in")
    for i in range(30):
        producer.send(t["in"], f"m{i}".encode(), partition=0)
    producer.flush()
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        admin.delete_records({TopicPartition(t["in"], 0): 10})
    finally:
        admin.close()
    key = f"{t['in']}:0"
    fn = _ReadAllPartitionsFn(KafkaConfig(bootstrap_servers=broker.bootstrap, group_id=f"g-{t['in']}"),
                              ReadConfig(topics=(t["in"],), discovery_seconds=3600))
    fn.setup()
    try:
        with caplog.at_level(logging.WARNING, logger="copydesk.transforms.kafka.live"):
            out, rest = _read_live(fn, Positions.of({key: (3, 3)}, listed_at=time.time()), want=20)
    finally:
        fn.teardown()
    assert [r.ref.offset for r in out] == list(range(10, 30)), [r.ref.offset for r in out]
    assert out[0].ref.covers_from == 3 and out[1].ref.covers_from == 11
    assert rest.as_dict()[key] == (30, 3)
    assert "gone (retention)" in caplog.text, caplog.text
