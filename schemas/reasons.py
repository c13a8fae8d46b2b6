"""The closed list of dead-letter stages and reason codes.

Every failure in the pipeline ends as a :class:`~copydesk.schemas.records.DeadLetter`
whose ``reason`` is one of these values; the README documents them in one table and the
JSON Schema (``deadletter.schema.json``) enumerates them, so a consumer can switch on it.
"""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    PARSE = "parse"  # decoding the Kafka message / input line
    FETCH = "fetch"  # HTTP fetch
    EXTRACT = "extract"  # boilerplate removal and metadata extraction
    DEDUP = "dedup"  # de-duplication
    WRITE = "write"  # encoding or writing the output record
    JOB = "job"  # the job process as a whole: a message that killed it (poison, pipelines/poison.py)


class Reason(StrEnum):
    # parse
    MALFORMED = "malformed"  # not UTF-8, not a JSON object/string, wrong field types
    NO_URL = "no_url"  # a JSON message without a url
    BAD_URL = "bad_url"  # not a URL (no host, spaces, garbage)
    UNSUPPORTED_SCHEME = "unsupported_scheme"  # anything but http/https
    MESSAGE_TOO_LARGE = "message_too_large"  # message bigger than --max-message-bytes
    # fetch
    TIMEOUT = "timeout"
    DNS = "dns"
    REFUSED = "refused"
    CONNECTION = "connection"  # reset, TLS and other transport errors
    HTTP_3XX = "http_3xx"  # a 3xx that cannot be followed (no Location, 300, 304)
    HTTP_4XX = "http_4xx"
    HTTP_5XX = "http_5xx"
    TOO_LARGE = "too_large"  # body (or decompressed body) over --max-page-bytes
    NOT_HTML = "not_html"  # content type or sniffed bytes are not HTML
    ROBOTS = "robots"  # disallowed by robots.txt
    BLOCKED_ADDRESS = "blocked_address"  # resolves to a private/loopback/link-local/metadata address
    TOO_MANY_REDIRECTS = "too_many_redirects"
    DECODE = "decode"  # the body cannot be decoded to text
    CIRCUIT_OPEN = "circuit_open"  # the host failed too often and is backed off
    # extract
    EMPTY = "empty"  # no article text could be extracted
    EXTRACT_TIMEOUT = "extract_timeout"
    EXTRACT_CRASH = "extract_crash"  # the extraction worker died (segfault, OOM kill)
    EXTRACT_ERROR = "extract_error"  # an exception inside the extractor
    # write
    ENCODE = "encode"  # the record could not be encoded / failed schema validation
    # any stage
    POISON = "poison"  # the message crashed its stage repeatedly
    INTERNAL = "internal"  # an unexpected exception, caught instead of failing the bundle


REASON_DESCRIPTIONS: dict[Reason, str] = {
    Reason.MALFORMED: "message is not UTF-8 text, not a URL string or JSON object, or a field has the wrong type",
    Reason.NO_URL: "JSON message without a non-empty `url`",
    Reason.BAD_URL: "`url` is not a valid absolute URL",
    Reason.UNSUPPORTED_SCHEME: "URL scheme other than http/https",
    Reason.MESSAGE_TOO_LARGE: "message larger than `--max-message-bytes`",
    Reason.TIMEOUT: "connect, read or total fetch time limit exceeded",
    Reason.DNS: "host name does not resolve",
    Reason.REFUSED: "connection refused",
    Reason.CONNECTION: "other transport error (reset, TLS, protocol)",
    Reason.HTTP_3XX: "HTTP 3xx that cannot be followed: a redirect status without `Location`, or 300/304/305/306",
    Reason.HTTP_4XX: "HTTP 4xx (404, 410, 451 at once; 429 after retries)",
    Reason.HTTP_5XX: "HTTP 5xx after retries",
    Reason.TOO_LARGE: "body or decompressed body over `--max-page-bytes`",
    Reason.NOT_HTML: "content type or content is not HTML",
    Reason.ROBOTS: "disallowed by the site's robots.txt",
    Reason.BLOCKED_ADDRESS: "resolves to a private, loopback, link-local or metadata address",
    Reason.TOO_MANY_REDIRECTS: "more than `--max-redirects` redirects",
    Reason.DECODE: "body cannot be decoded to text",
    Reason.CIRCUIT_OPEN: "host backed off after repeated failures",
    Reason.EMPTY: "no article text extracted",
    Reason.EXTRACT_TIMEOUT: "extraction exceeded its per-page time limit",
    Reason.EXTRACT_CRASH: "the extraction worker process died",
    Reason.EXTRACT_ERROR: "the extractor raised an exception",
    Reason.ENCODE: "record could not be encoded or failed schema validation",
    Reason.POISON: "message killed the job process `--max-attempts` times and again when read alone "
                   "(stage `job`; needs `--attempts-topic`): skipped",
    Reason.INTERNAL: "unexpected exception (a bug): the message is kept instead of failing the job",
}
