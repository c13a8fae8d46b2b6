"""copydesk's pipeline options.

One ``PipelineOptions`` subclass, so the options travel with the job and show in a
runner's UI. Every flag falls back to an environment variable (``COPYDESK_<NAME>``) and
``--help`` says which; the table of flags is pipelines/flags.py (no Beam there). Flags that
are not copydesk's are Beam's own (``--runner``, ``--streaming``, ``--flink_master`` ...),
passed through untouched.
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from copydesk.pipelines.flags import SECRET_WORDS, add_arguments, env_name, masked, option_dest, parse_kafka_config

__all__ = ["FN_API_RUNNER", "CopydeskOptions", "SECRET_WORDS", "env_name", "masked", "option_dest",
           "parse_kafka_config"]

FN_API_RUNNER = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"


class CopydeskOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        add_arguments(parser)
