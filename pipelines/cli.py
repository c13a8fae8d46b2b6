"""The ``copydesk`` command: ``run``, ``demo``, ``extract``.

``copydesk run`` is the long-running job; every flag it does not know is a Beam pipeline
option (``--runner``, ``--streaming``, ``--flink_master`` ...). ``copydesk demo`` runs the
whole path on an embedded broker and a local site of sample pages, and stops by itself.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from copydesk.pipelines.argv import pop_flag
from copydesk.transforms.logs import setup_logging, spawned_child_logging


def _run_help() -> str:
    from copydesk.pipelines.options import CopydeskOptions

    parser = argparse.ArgumentParser(
        prog="copydesk run",
        description="The long-running job: Kafka topic (or --input-file) in, article records and dead letters "
                    "out. Any other flag is passed to Beam as a pipeline option (--runner, --streaming, ...). "
                    "Default runner: Prism (one streaming pipeline) when a Prism binary is found "
                    "(--prism_location, COPYDESK_PRISM, .cache/bin/prism, $GOPATH/bin, PATH) or Beam can "
                    "download it, else micro-batches on Beam's local Python runner; the job logs which and why.",
    )
    CopydeskOptions._add_argparse_args(parser)
    parser.add_argument("--log-level", default=os.environ.get("COPYDESK_LOG_LEVEL", "info"),
                        help="[env: COPYDESK_LOG_LEVEL]")
    parser.add_argument("--log-format", default=os.environ.get("COPYDESK_LOG_FORMAT", "text"),
                        choices=("text", "json"), help="[env: COPYDESK_LOG_FORMAT]")
    parser.add_argument("--batch-seconds", type=float, default=10.0,
                        help="micro-batch fallback: longest micro-batch, seconds (see README)")
    return parser.format_help()


def cmd_run(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv:
        print(_run_help())
        return 0
    # A SIGTERM while Beam is still being imported (seconds) must not kill the job unclean:
    # note it at once; the job's own handler takes over below and sees it.
    early = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: early.set())
    argv, level = pop_flag(argv, "--log-level", os.environ.get("COPYDESK_LOG_LEVEL", "info"))
    argv, fmt = pop_flag(argv, "--log-format", os.environ.get("COPYDESK_LOG_FORMAT", "text"))
    argv, batch = pop_flag(argv, "--batch-seconds", "10")
    setup_logging(level or "info", fmt or "text")
    # Before Beam is imported (1-2 s): the extraction forkserver, the Prism binary and the
    # broker checks (a thread) start now, and the job takes them over (pipelines/startup.py).
    from copydesk.pipelines.startup import ConfigError, Prestart

    prestart = Prestart(argv, early)
    from copydesk.pipelines.job import StopFlag, run_job
    from copydesk.pipelines.startup import process_seconds

    logging.getLogger("copydesk.pipelines.startup").debug("start-up: imports done %.2fs after the process started",
                                                          process_seconds() or 0.0)

    stop = StopFlag(early)
    stop.install()
    exporter = None
    try:
        from copydesk.pipelines.options import CopydeskOptions
        from copydesk.pipelines.pipeline import pipeline_options

        options = pipeline_options(argv)
        port = options.view_as(CopydeskOptions).metrics_port
        if port:
            from copydesk.pipelines.metrics import start_exporter

            exporter = start_exporter(options, port)
        stats = run_job(argv, stop=stop, batch_seconds=float(batch or 10),
                        on_run=exporter.on_run if exporter else None,
                        on_broker=exporter.on_broker if exporter else None, prestart=prestart)
    except ConfigError as exc:
        print(f"copydesk run: {exc}", file=sys.stderr)
        return 2
    finally:
        prestart.close()
        if exporter:
            exporter.close()
    logging.getLogger("copydesk").info("stopped after %d run(s): %d messages read", stats.runs, stats.read)
    return 0


def extract_cli_config(compare: str | None = None):
    """The ExtractConfig ``copydesk extract`` runs: ExtractConfig's defaults (as the pipeline's
    ``extract_config``) unless ``--compare`` is given."""
    from copydesk.transforms.extract.core import ExtractConfig

    return ExtractConfig() if compare is None else ExtractConfig(compare=compare)


def cmd_extract(argv: list[str]) -> int:
    from copydesk.transforms.extract.core import COMPARE_MODES

    parser = argparse.ArgumentParser(prog="copydesk extract",
                                     description="Offline extraction of .html/.html.gz files or folders into "
                                                 "JSON-lines records (one per file, with an `input` field).")
    parser.add_argument("paths", nargs="+", help="files or folders")
    parser.add_argument("--url", default=None, help="the pages' URL (when extracting one page)")
    parser.add_argument("--output", "-o", required=True, help="JSON-lines output file ('-' for stdout)")
    parser.add_argument("--workers", type=int, default=None, help="extraction processes (default: one per core)")
    parser.add_argument("--compare", choices=COMPARE_MODES, default=None,
                        help="when trafilatura's readability/justext comparison runs: auto (when the quick result "
                             "looks wrong, the default, as `copydesk run`) or always (trafilatura's default mode)")
    args = parser.parse_args(argv)
    setup_logging("warning", "text")
    from copydesk.pipelines.extract_cmd import run_extract

    config = extract_cli_config(args.compare)
    summary = run_extract(args.paths, args.output, url=args.url, config=config, workers=args.workers)
    print(" ".join(f"{k}={v}" for k, v in summary.items()), file=sys.stderr)
    return 0


def cmd_demo(argv: list[str]) -> int:
    from copydesk.pipelines.demo.main import main as demo_main

    return demo_main(argv)


def cmd_top(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="copydesk top",
                                     description="Live terminal view of a running job's metrics (copydesk run "
                                                 "--metrics-port): rate per stage, consumer lag, errors by reason.")
    parser.add_argument("--url", default="http://127.0.0.1:9108/metrics", help="the job's Prometheus endpoint")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    parser.add_argument("--once", action="store_true", help="print one screen (rates over --interval) and exit")
    args = parser.parse_args(argv)
    from copydesk.pipelines.top import top

    try:
        return top(args.url, interval=args.interval, once=args.once)
    except KeyboardInterrupt:
        return 0


COMMANDS = {"run": cmd_run, "demo": cmd_demo, "extract": cmd_extract}
COMMANDS["top"] = cmd_top


def cmd_replay(argv: list[str]) -> int:
    from copydesk.pipelines.replay import main as replay_main

    return replay_main(argv)


COMMANDS["replay"] = cmd_replay


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: copydesk {run,demo,extract} [options]\n\n"
              "  run      the long-running pipeline (copydesk run --help)\n"
              "  demo     everything on an embedded broker and a local site of sample pages; stops by itself\n"
              "  extract  offline extraction of HTML files into JSON lines\n"
              "  top      live terminal view of a running job's metrics (copydesk top --help)\n"
              "  replay   a bounded run over a range of an input topic (copydesk replay --help)\n")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return COMMANDS[argv[0]](argv[1:])


spawned_child_logging()

if __name__ == "__main__":
    sys.exit(main())
