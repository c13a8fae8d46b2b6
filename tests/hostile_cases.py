"""The hostile-input catalogue shared by tests/test_hostile.py and benchmarks/bench_hostile.py.

* :data:`GUARD_FORMS`: URL forms that name a loopback, private, link-local, metadata or
  otherwise internal address (and the reason each is refused with), checked at unit level
  through the real parse stage and the address guard, never sent;
* :data:`PUBLIC_FORMS`: the same disguises around public addresses, which must pass;
* :func:`observer_forms` / :func:`redirect_forms`: loopback forms aimed at a real server on
  127.0.0.2 (not in the job's ``--allow-networks 127.0.0.1/32``), sent end to end, directly
  and as redirect targets: that server must see no request at all;
* :func:`message_cases`: malformed and hostile messages, each with the one outcome and
  reason it must end as (a record, or a dead letter with this reason).
"""

from __future__ import annotations

import http.server
import time
from dataclasses import dataclass

import orjson

from copydesk.pipelines.demo.site import site_root
from fetch_server import MisbehavingServer, html_route, redirect_route, send

BLOCKED, BAD_URL, DNS = "blocked_address", "bad_url", "dns"

# Hosts (as written in a URL) of internal addresses.
_REFUSED_HOSTS = """
127.0.0.1 127.0.0.2 127.1 127.0.1 2130706433 0x7f000001 0x7f.0.0.1 017700000001 0x7f.1 127.255.255.254
127.0.0.1. localhost LOCALHOST localhost. 0.0.0.0 0 0x0 00
10.0.0.1 10.255.255.255 167772161 172.16.0.1 172.31.255.255 192.168.0.1 192.168.1.1 3232235777
100.64.0.1 100.100.100.200 169.254.169.254 169.254.170.2 0xa9fea9fe 2852039166 169.254.0.1
192.0.0.170 192.0.0.192 198.18.0.1 198.19.255.255 224.0.0.1 239.255.255.250 255.255.255.255
240.0.0.1 192.0.2.1 198.51.100.1 203.0.113.1 192.88.99.1
[::1] [0:0:0:0:0:0:0:1] [::] [0::1] [::ffff:127.0.0.1] [::ffff:7f00:1] [::127.0.0.1] [::7f00:1]
[::a9fe:a9fe] [::169.254.169.254] [::ffff:169.254.169.254] [::ffff:a9fe:a9fe] [::ffff:10.0.0.1]
[::ffff:192.168.0.1] [::ffff:100.64.0.1] [::ffff:255.255.255.255] [::ffff:0.0.0.0]
[::ffff:0:127.0.0.1] [::ffff:0:7f00:1] [::ffff:0:a9fe:a9fe] [::ffff:0:10.0.0.1]
[64:ff9b::127.0.0.1] [64:ff9b::7f00:1] [64:ff9b::a9fe:a9fe] [64:ff9b::10.0.0.1]
[64:ff9b:1::a00:1] [64:ff9b:1::a9fe:a9fe] [64:ff9b:1::808:808] [64:ff9b:1:ffff::7f00:1]
[2002:7f00:1::] [2002:a9fe:a9fe::1] [2002:c0a8:101::1] [2002:a00:1::]
[2001:0:4136:e378:8000:63bf:3fff:fdd2] [2001:0:7f00:1::] [2001::1] [2001:2::1]
[fe80::1] [fe80::1%25eth0] [fe80::a9fe:a9fe] [fc00::1] [fd00::1] [fd00:ec2::254] [fec0::1]
[ff02::1] [ff05::1:3] [2001:db8::1] [100::1]
metadata.test internal.test v6.test mapped.test siit.test nat64.test
""".split()
# What the guard is told instead of DNS for the named hosts above (``pins``, as --resolve).
PINS = {"metadata.test": "169.254.169.254", "internal.test": "10.0.0.1", "v6.test": "::1",
        "mapped.test": "::ffff:127.0.0.1", "siit.test": "::ffff:0:a9fe:a9fe", "nat64.test": "64:ff9b:1::a00:1"}

GUARD_FORMS: list[tuple[str, str]] = [(f"http://{h}/", BLOCKED) for h in _REFUSED_HOSTS] + [
    (f"http://{h}:8080/latest/meta-data/", BLOCKED) for h in ("169.254.169.254", "[::ffff:a9fe:a9fe]")
] + [
    ("https://169.254.169.254/latest/meta-data/iam/security-credentials/", BLOCKED),
    ("HTTP://169.254.169.254", BLOCKED),
    ("http://user:password@127.0.0.1/", BLOCKED),
    ("http://public.example@127.0.0.1/", BLOCKED),  # the host is after the @
    ("http://127.0.0.1#@public.example/", BLOCKED),
    ("http://127.0.0.1\u3002", BLOCKED),  # ideographic full stop: httpx reads the host as "127.0.0.1."
    ("http://127.000.000.001/", BAD_URL),  # leading zeros: no IPv4 literal httpx will send
    ("http://0177.0.0.1/", BAD_URL),
    ("http://012.0.0.1/", BAD_URL),
    ("http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/", BAD_URL),  # full-width digits: no IDNA name
    ("http://%31%32%37.0.0.1/", DNS),  # percent-encoded host: no such name, nothing resolved
]

PUBLIC_FORMS = ["http://8.8.8.8/", "http://[::ffff:8.8.8.8]/", "http://[64:ff9b::808:808]/",
                "http://[2002:808:808::1]/", "http://[2606:4700:4700::1111]/", "http://134744072/"]


def observer_forms(port: int) -> list[str]:
    """Direct URLs for the observer server on 127.0.0.2:``port`` (pin ``observer.test``)."""
    hosts = ["127.0.0.2", "127.0.2", "2130706434", "0x7f000002", "0x7f.0.0.2", "[::ffff:127.0.0.2]",
             "[::ffff:7f00:2]", "[::127.0.0.2]", "[::ffff:0:127.0.0.2]", "[64:ff9b::127.0.0.2]",
             "[64:ff9b:1::7f00:2]", "[2002:7f00:2::1]", "[2001:0:7f00:2::]", "[::1]", "observer.test",
             "OBSERVER.test."]
    return [f"http://{h}:{port}/private?via=direct" for h in hosts]


def redirect_forms(port: int) -> list[str]:
    """Redirect targets (Location values) that lead to the observer or to metadata."""
    return [f"http://{h}:{port}/private?via=redirect" for h in (
        "127.0.0.2", "2130706434", "[::ffff:127.0.0.2]", "[::127.0.0.2]", "[::ffff:0:127.0.0.2]",
        "[64:ff9b:1::7f00:2]", "[2002:7f00:2::]", "observer.test")] + [
        f"//127.0.0.2:{port}/private?via=scheme-relative", "http://169.254.169.254/latest/meta-data/",
        "http://[::a9fe:a9fe]/latest/meta-data/", "http://[fd00:ec2::254]/latest/meta-data/"]


# -- messages -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Case:
    """One kind of message and what it must end as: ``reason`` None means an article record."""

    name: str
    value: bytes | None
    reason: str | None
    stage: str | None = None  # the dead letter's stage (None: not checked)


def _drip(h: http.server.BaseHTTPRequestHandler) -> None:
    """A byte a second, for ever (until the client hangs up)."""
    h.send_response(200)
    h.send_header("Content-Type", "text/html")
    h.send_header("Content-Length", "100000")
    h.end_headers()
    for _ in range(100_000):
        h.wfile.write(b"x")
        h.wfile.flush()
        time.sleep(1.0)


def article_html(i: int = 0) -> str:
    paths = [p for p in (site_root() / "urls.txt").read_text().split() if p]
    return (site_root() / paths[i % len(paths)].lstrip("/")).read_text("utf-8").replace("{{BASE}}", "http://a.test")


def install_routes(bad: MisbehavingServer, robots: MisbehavingServer, slow: MisbehavingServer,
                   observer_port: int) -> None:
    """Routes of the misbehaving server (``bad``), the one whose robots.txt redirects inward
    and the slow one (a drip and a 500 that is retried, kept off ``bad``'s circuit breaker)."""
    slow.routes["/drip"] = _drip
    slow.routes["/error"] = html_route("oops", status=500)
    r = bad.routes
    r["/no-location"] = lambda h: send(h, 302, b"")
    r["/empty-location"] = lambda h: send(h, 301, b"", {"Location": ""})
    r["/not-modified"] = lambda h: send(h, 304, b"")
    r["/multiple-choices"] = lambda h: send(h, 300, b"<a href=/a>a</a>", {"Location": "/missing"})
    r["/gone"] = html_route("gone", status=410)
    r["/png"] = html_route(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", content_type="image/png")
    r["/binary"] = html_route(b"<html>\0\0\0\x01\x02</html>", content_type="text/html")
    r["/huge"] = lambda h: send(h, 200, b"<p>x</p>", {"Content-Length": str(10**9)})
    r["/loop"] = redirect_route("/loop")
    r["/to-js"] = redirect_route("javascript:alert(1)")
    r["/to-ftp"] = redirect_route("ftp://127.0.0.1/file")
    r["/to-data"] = redirect_route("data:text/html,<p>hi</p>")
    r["/to-bad-port"] = redirect_route("http://127.0.0.1:99999/")
    r["/empty-page"] = html_route("<html><head><title>t</title></head><body></body></html>")
    for i, target in enumerate(redirect_forms(observer_port)):
        r[f"/to-internal/{i}"] = redirect_route(target)
    robots.routes["/robots.txt"] = redirect_route(f"http://127.0.0.2:{observer_port}/robots.txt")
    robots.routes["/page"] = html_route(article_html(3))


def message_cases(site_url, bad_url, robots_url, slow_url, observer_port: int) -> list[Case]:
    """Every kind of message, with its expected outcome. ``*_url(path)`` build URLs of the
    demo site, the misbehaving, the robots and the slow server (all on 127.0.0.1)."""
    j = orjson.dumps
    page = site_url("/continental/world/2025/03/11/floods-force-thousands-from-homes-in-oregon-timber-town.html")
    c: list[Case] = []

    def add(name: str, value: bytes | None, reason: str | None, stage: str | None = None) -> None:
        c.append(Case(name, value, reason, stage))

    # outcome: a record
    add("plain url", f"{page}?k=plain".encode(), None)
    add("url with spaces around", f"  {page}?k=spaced \t".encode(), None)
    add("url with CRLF after it", f"{page}?k=crlf\r\n".encode(), None)
    add("url after a BOM", b"\xef\xbb\xbf" + f"{page}?k=bom".encode(), None)
    add("json object", j({"url": f"{page}?k=json", "source": "feed", "id": "x1"}), None)
    add("json string", j(f"{page}?k=jsonstr"), None)
    add("json with unknown fields", j({"url": f"{page}?k=extra", "zzz": [1, {"a": None}]}), None)
    add("url with a fragment", f"{page}?k=frag#section-2".encode(), None)
    add("url with tracking params", f"{page}?k=track&utm_source=x&fbclid=y".encode(), None)
    add("upper-case scheme", f"HTTP{page[4:]}?k=upper".encode(), None)
    add("prescraped html", j({"url": "http://a.test/prescraped", "html": article_html(1)}), None)
    add("prescraped html with NUL escapes", j({"url": "http://a.test/prescraped-nul",
                                                 "html": article_html(2).replace("</p>", "\u0000</p>", 1)}), None)
    add("robots.txt redirects inward", robots_url("/page").encode(), None)
    # parse: malformed
    for name, value in [
        ("empty message", b""), ("null value", None), ("one space", b" "), ("whitespace only", b" \t\r\n\x0b\x0c "),
        ("newline only", b"\n"), ("BOM only", b"\xef\xbb\xbf"), ("BOM and blanks", b"\xef\xbb\xbf  \n"),
        ("invalid byte", b"\xff"), ("lone continuation byte", b"\x80"), ("truncated sequence", b"http://a.test/\xe2\x82"),
        ("overlong slash", b"\xc0\xaf"), ("overlong dots in url", b"http://a.test/\xc0\xae\xc0\xae/"),
        ("overlong 3-byte", b"http://a.test/\xe0\x80\xaf"), ("overlong 4-byte", b"\xf0\x80\x80\xaf"),
        ("encoded surrogate", b"\xed\xa0\x80"), ("encoded surrogate in url", b"http://a.test/\xed\xb2\x80"),
        ("beyond U+10FFFF", b"http://a.test/\xf4\x90\x80\x80"), ("latin-1 byte in url", b"http://a.test/caf\xe9"),
        ("utf-16 url", "http://a.test/".encode("utf-16")),
        ("invalid utf-8 in json string", b'{"url": "http://a.test/\xff"}'),
        ("overlong in json string", b'{"url": "http://a.test/\xc0\xaf"}'),
        ("encoded surrogate in json", b'{"url": "http://a.test/", "source": "\xed\xa0\x80"}'),
        ("lone surrogate escape", b'{"url": "http://a.test/\\ud800"}'), ("lone low surrogate string", b'"\\udc80"'),
        ("json null", b"null"), ("json true", b"true"), ("json false", b"false"), ("json zero", b"0"),
        ("json number", b"-1.5e3"), ("json big number", b"1" * 400), ("json empty array", b"[]"),
        ("json array of url", j([page])), ("url is a number", b'{"url": 42}'), ("url is a list", j({"url": [page]})),
        ("url is an object", b'{"url": {"href": "http://a.test/"}}'), ("url is true", b'{"url": true}'),
        ("force is a string", j({"url": page, "force": "yes"})), ("html is a number", j({"url": page, "html": 7})),
        ("source is an object", j({"url": page, "source": {}})), ("id is a list", j({"url": page, "id": [1]})),
        ("truncated json", b'{"url": "http://a.test/"'), ("trailing comma", b'{"url": "http://a.test/",}'),
        ("single quotes", b"{'url': 'http://a.test/'}"), ("json then garbage", b'{"url": "http://a.test/"} x'),
        ("deep nesting", b"[" * 5000), ("deep object nesting", b'{"a":' * 3000),
        ("NaN", b'{"url": "http://a.test/", "force": NaN}'),
    ]:
        add(name, value, "malformed", "parse")
    # parse: no_url
    for name, value in [("empty object", b"{}"), ("url null", b'{"url": null}'), ("url empty", b'{"url": ""}'),
                        ("url blank", b'{"url": " \\t "}'), ("URL upper-case key", j({"URL": page})),
                        ("empty json string", b'""'), ("blank json string", b'"   "')]:
        add(name, value, "no_url", "parse")
    # parse: bad_url
    for name, value in [
        ("NUL in path", b"http://a.test/\x00x"), ("BEL in path", b"http://a.test/\x07"), ("NUL in host", b"http://a.te\x00st/"),
        ("only NUL", b"\x00"), ("NUL escape in json", b'{"url": "http://a.test/\\u0000"}'),
        ("ESC escape in json", b'{"url": "http://a.test/\\u001b[31m"}'), ("DEL", b"http://a.test/\x7f"),
        ("C1 control", "http://a.test/\u0085x".encode()), ("line separator", "http://a.test/a\u2028b".encode()),
        ("space inside", b"http://a.test/a b"), ("tab inside", b"http://a.test/a\tb"), ("CR inside", b"http://a.test/a\rb"),
        ("LF inside", b"http://a.test/a\nb"), ("utf-16be without BOM: NULs", "http://a.test/".encode("utf-16-be")), ("not a url", b"not a url at all"), ("no scheme", b"a.test/path"),
        ("host and port", b"localhost:8080/x"), ("scheme-relative", b"//a.test/x"), ("one slash", b"http:/a.test/x"),
        ("no slashes", b"http:a.test"), ("scheme only", b"http://"), ("no host", b"http:///path"),
        ("port too big", b"http://a.test:99999/"), ("port not a number", b"http://a.test:port/"),
        ("unclosed ipv6", b"http://[::1/"), ("ipv4 out of range", b"http://256.0.0.1/"),
        ("bad idna", "http://\u2603.com/".encode()), ("empty a-label", b"http://xn--/"),
        ("url too long", b"http://a.test/" + b"a" * 9000),
    ]:
        add(name, value, "bad_url", "parse")
    # parse: unsupported_scheme
    for value in [b"javascript:alert(1)", b"JAVASCRIPT:alert(document.cookie)", b"data:text/html,<script>alert(1)</script>",
                  b"ftp://a.test/file", b"file:///etc/passwd", b"gopher://127.0.0.1:6379/_INFO", b"mailto:x@a.test",
                  b"ws://a.test/", b"dict://127.0.0.1:11211/stats", b"view-source:http://a.test/",
                  j({"url": "vbscript:msgbox(1)"})]:
        add(f"scheme {value.split(b':', 1)[0].decode().strip(chr(34) + '{ ')}", value, "unsupported_scheme", "parse")
    add("message too large", b"http://a.test/" + b"a" * 70_000, "message_too_large", "parse")
    # fetch
    for name, path, reason in [
        ("302 without Location", "/no-location", "http_3xx"),
        ("301 with empty Location", "/empty-location", "http_3xx"), ("304", "/not-modified", "http_3xx"),
        ("300", "/multiple-choices", "http_3xx"), ("410", "/gone", "http_4xx"),
        ("404", "/nothing-here", "http_4xx"), ("png", "/png", "not_html"), ("NUL bytes in body", "/binary", "not_html"),
        ("Content-Length 1 GB", "/huge", "too_large"), ("redirect loop", "/loop", "too_many_redirects"),
        ("redirect to javascript:", "/to-js", "unsupported_scheme"), ("redirect to ftp:", "/to-ftp", "unsupported_scheme"),
        ("redirect to data:", "/to-data", "unsupported_scheme"), ("redirect to a bad port", "/to-bad-port", "bad_url"),
    ]:
        add(name, bad_url(path).encode(), reason, "fetch")
    add("drip host", slow_url("/drip").encode(), "timeout", "fetch")
    add("500 after retries", slow_url("/error").encode(), "http_5xx", "fetch")
    add("page without text", bad_url("/empty-page").encode(), "empty", "extract")
    add("prescraped empty html", j({"url": "http://a.test/empty", "html": "<html></html>"}), "empty", "extract")
    for i, target in enumerate(redirect_forms(observer_port)):
        add(f"redirect to {target}", bad_url(f"/to-internal/{i}").encode(), "blocked_address", "fetch")
    for url in observer_forms(observer_port):
        add(f"direct {url}", url.encode(), "blocked_address", "fetch")
    return c
