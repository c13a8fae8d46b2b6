"""Local JSON-lines files in and out: batch input, and output files for local runs.

File input is a bounded read (``ReadFromText``), so a run over a file ends when the file
is done. Each line keeps its path and line index as its source, so a dead letter points
at the line. Output files are appended to and flushed at the end of every bundle; they are
meant for local runs (on a distributed runner write to topics).
"""

from __future__ import annotations

import os
import threading

import apache_beam as beam
from apache_beam.metrics import Metrics

from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from copydesk.schemas.records import SourceRef
from copydesk.transforms.kafka.io import acks_for
from copydesk.transforms.stage_metrics import FILE_RECORDS_WRITTEN, WRITE_NS


class _LineToInput(beam.DoFn):
    def __init__(self, path: str) -> None:
        self.path = path

    def process(self, element: tuple[int, bytes]):
        index, line = element
        yield line, SourceRef(topic=f"file:{self.path}", partition=0, offset=index)


class ReadInputFile(beam.PTransform):
    """A file of JSON lines or one URL a line -> (bytes, SourceRef), one per line."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def expand(self, pbegin):
        return (
            pbegin
            | "Lines" >> beam.Create([self.path])
            | "ReadLines" >> beam.FlatMap(_numbered_lines)
            | "ToInput" >> beam.ParDo(_LineToInput(self.path))
        )


def _numbered_lines(path: str):
    """(index, line) for every line, as bytes: lines end at ``\\n`` only (a CR or U+2028
    inside a line is part of it), nothing is decoded here (invalid UTF-8 is the parse stage's
    ``malformed``) and blank lines are kept (each is one input and becomes one dead letter)."""
    with open(path, "rb") as fh:
        for i, line in enumerate(fh):
            yield i, line[:-1] if line.endswith(b"\n") else line


_file_locks: dict[str, threading.Lock] = {}
_file_locks_guard = threading.Lock()


def _lock_for(path: str) -> threading.Lock:
    with _file_locks_guard:
        return _file_locks.setdefault(path, threading.Lock())


class _AppendJsonLinesFn(beam.DoFn):
    def __init__(self, path: str, encode) -> None:
        self.path = path
        self.encode = encode
        self.written = Metrics.counter(WRITE_NS, FILE_RECORDS_WRITTEN)

    def start_bundle(self) -> None:
        self._buf: list[bytes] = []
        self._refs: list = []

    def process(self, record) -> None:
        self._buf.append(self.encode(record) + b"\n")
        self._refs.append(getattr(record, "ref", None))

    def finish_bundle(self) -> None:
        if not self._buf:
            return
        data = b"".join(self._buf)
        with _lock_for(self.path):
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        self.written.inc(len(self._buf))
        self._buf = []
        # Acks for Kafka-sourced records written to a file (see transforms/kafka/commit.py).
        for ack in acks_for(self._refs):
            yield WindowedValue(ack, Timestamp.now(), [GlobalWindow()])
        self._refs = []


class WriteJsonLines(beam.PTransform):
    def __init__(self, path: str, encode) -> None:
        super().__init__()
        self.path = path
        self.encode = encode

    def expand(self, pcoll):
        return pcoll | beam.ParDo(_AppendJsonLinesFn(self.path, self.encode))
