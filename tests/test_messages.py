import orjson
import pytest

from copydesk.schemas.codec import decode, encode, validate_dead_letter
from copydesk.schemas.records import DeadLetter, InputMessage, SourceRef
from copydesk.transforms.parse.messages import parse_message

REF = SourceRef(topic="urls", partition=3, offset=42)


def test_plain_url():
    m = parse_message(b"  https://example.com/a?b=1 \n", REF)
    assert isinstance(m, InputMessage)
    assert m.url == "https://example.com/a?b=1"
    assert m.ref == REF and m.html is None and m.force is False


def test_json_with_metadata_and_prescraped_html():
    doc = {"url": "https://news.example/x", "html": "<html><p>hi</p></html>", "source": "feed",
           "discovered_at": "2025-01-01T00:00:00Z", "id": "abc", "force": True}
    m = parse_message(orjson.dumps(doc), REF)
    assert isinstance(m, InputMessage)
    assert (m.url, m.html, m.source, m.discovered_at, m.id, m.force) == (
        doc["url"], doc["html"], "feed", doc["discovered_at"], "abc", True)
    assert "html" not in orjson.loads(m.raw)  # the dead-letter copy of the input leaves the page out


def test_json_string_holding_a_url():
    m = parse_message(b'"http://example.com/q"', REF)
    assert isinstance(m, InputMessage) and m.url == "http://example.com/q"


@pytest.mark.parametrize("value,reason", [
    (b"not a url at all", "bad_url"),
    (b"example.com/no-scheme", "bad_url"),
    (b"ftp://example.com/file", "unsupported_scheme"),
    (b"javascript:alert(1)", "unsupported_scheme"),
    (b"{\"url\": \"http://x\"", "malformed"),
    (b"[1, 2]", "malformed"),
    (b"{\"source\": \"x\"}", "no_url"),
    (b"{\"url\": \"\"}", "no_url"),
    (b"{\"url\": 5}", "malformed"),
    (b"{\"url\": \"http://a.b/\", \"force\": \"yes\"}", "malformed"),
    (b"{\"url\": \"http://a.b/\", \"html\": 7}", "malformed"),
    (b"\xff\xfe\x00bad", "malformed"),
    (b"", "malformed"),
    (None, "malformed"),
    (b"http://", "bad_url"),
    (b"http://a.b:99999/", "bad_url"),
])
def test_bad_messages_become_dead_letters(value, reason):
    d = parse_message(value, REF)
    assert isinstance(d, DeadLetter), d
    assert (d.stage, d.reason) == ("parse", reason)
    assert (d.topic, d.partition, d.offset) == ("urls", 3, 42)
    validate_dead_letter(decode(encode(d)))


def test_huge_message_is_refused_and_truncated_in_the_dead_letter():
    big = b"http://example.com/" + b"a" * (10 * 1024 * 1024)
    d = parse_message(big, REF, max_bytes=8 * 1024 * 1024)
    assert isinstance(d, DeadLetter) and d.reason == "message_too_large"
    assert d.input_size == len(big)
    assert len(d.input) <= 4096
    assert len(encode(d)) < 16 * 1024


@pytest.mark.parametrize("value", [
    '{"url": "https://a.test/x", "html": "<p>caf\u00e9 \u2603</p>"}'.encode(),
    ' \n{"url": "https://a.test/x", "html": "<p>caf\u00e9 \u2603</p>"}\r\n'.encode(),
    '\ufeff{"url": "https://a.test/x", "html": "<p>caf\u00e9 \u2603</p>"}'.encode(),  # a BOM
    '{"url": "https://a.test/x", "html": "<p>caf\u00e9 \u2603</p>"}\u3000'.encode(),  # Unicode space after
])
def test_json_objects_parse_alike_whatever_surrounds_them(value):
    # JSON objects are parsed from the bytes as received; what orjson refuses there (a BOM, a
    # space that is not JSON's) takes the path that decodes and strips the text first
    m = parse_message(value, REF)
    assert isinstance(m, InputMessage), m
    assert (m.url, m.html) == ("https://a.test/x", "<p>caf\u00e9 \u2603</p>")
    assert orjson.loads(m.raw) == {"url": "https://a.test/x"}


@pytest.mark.parametrize("value,says", [
    (b'{"url": "https://a.test/x", "html": "\xff"}', "not UTF-8"),
    (b'{"url": "https://a.test/x", "html": "\xed\xa0\x80"}', "not UTF-8"),  # an encoded surrogate
    (b'{"url": "https://a.test/x", "html": "\\ud800"}', "invalid JSON"),  # a lone escaped surrogate
    (b'{"url": "https://a.test/x"} trailing', "invalid JSON"),
])
def test_broken_json_objects_say_why(value, says):
    d = parse_message(value, REF)
    assert isinstance(d, DeadLetter) and d.reason == "malformed", d
    assert says in d.message
    assert (d.topic, d.partition, d.offset) == ("urls", 3, 42)


def test_raw_of_a_message_without_html_is_its_stripped_text():
    m = parse_message(b'  {"url": "https://a.test/x", "source": "feed"}\n', REF)
    assert isinstance(m, InputMessage)
    assert m.raw == '{"url": "https://a.test/x", "source": "feed"}'
