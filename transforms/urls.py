"""URL canonicalisation and stable record ids (pure functions).

The record id is derived from the canonical URL only, so the same input gives the same id
on every replay and a replay's records replace rather than multiply downstream.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import courlan
import httpx

from copydesk.schemas.records import CheckedURL

# Query parameters that only track the reader and never select content.
TRACKING_PARAMS = frozenset(
    {
        "fbclid", "gclid", "dclid", "gclsrc", "msclkid", "yclid", "twclid", "igshid", "mc_cid", "mc_eid",
        "_ga", "_gl", "ocid", "cmpid", "ito", "xtor", "ns_mchannel", "ns_source", "ns_campaign",
        "ns_linkname", "ns_fee", "smid", "smtyp", "ref_src", "ref_url", "share", "sh", "at_medium",
        "at_campaign", "at_custom1", "at_custom2", "at_custom3", "at_custom4", "wt_mc", "wt.mc_id",
        "cid", "icid", "int_source", "int_medium", "int_campaign", "src", "feature", "mbid",
        "utm", "outputtype",
    }
)
TRACKING_PREFIXES = ("utm_", "pk_", "mtm_", "hsa_", "at_", "oly_", "vero_", "__hs", "_hs")


class InvalidURL(ValueError):
    """The string is not an absolute http(s) URL we can fetch; ``reason`` is its dead-letter code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _is_tracking(name: str) -> bool:
    n = name.lower()
    return n in TRACKING_PARAMS or n.startswith(TRACKING_PREFIXES)


def strip_tracking(url: str) -> str:
    parts = urlsplit(url)
    if not parts.query:
        return urlunsplit(parts._replace(fragment=""))
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _is_tracking(k)]
    return urlunsplit(parts._replace(query=urlencode(kept, doseq=True), fragment=""))


MAX_URL_CHARS = 8192
_SCHEME_PORT = re.compile(r"^[^:/?#]+:\d+(?:[/?#]|$)")  # "localhost:8080/x": a host and port, not a scheme


def _bad_char(url: str) -> str | None:
    """A description of the first character no URL may hold raw (whitespace, C0/C1 controls, DEL)."""
    for i, c in enumerate(url):
        o = ord(c)
        if o < 0x20 or 0x7F <= o <= 0x9F or c.isspace() or 0xD800 <= o <= 0xDFFF:
            kind = "whitespace" if c.isspace() else "a surrogate" if o >= 0xD800 else "a control character"
            return f"URL contains {kind} (U+{o:04X} at {i})"
    return None


def parse_url(url: object) -> CheckedURL:
    """Check a URL once and keep what was learned; raise :class:`InvalidURL` with a reason code.

    ``no_url`` for nothing, ``unsupported_scheme`` for any scheme but http/https
    (``javascript:``, ``data:``, ``ftp:`` ...), ``bad_url`` for everything else that is no
    absolute http(s) URL the fetcher's HTTP client can send (control characters, no host, bad
    port, bad IPv4/IPv6 literal or IDNA name).
    """
    if not isinstance(url, str) or not url.strip():
        raise InvalidURL("no_url", "empty URL")
    url = url.strip()
    if len(url) > MAX_URL_CHARS:
        raise InvalidURL("bad_url", f"URL is {len(url)} characters long (max {MAX_URL_CHARS})")
    bad = _bad_char(url)
    if bad:
        raise InvalidURL("bad_url", bad)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidURL("bad_url", f"unparsable URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if not scheme or _SCHEME_PORT.match(url):
        raise InvalidURL("bad_url", "not an absolute URL (no scheme)")
    if scheme not in ("http", "https"):
        raise InvalidURL("unsupported_scheme", f"scheme {scheme!r} is not http or https")
    if not url[len(scheme) + 1:].startswith("//"):
        raise InvalidURL("bad_url", "not an absolute URL (no // after the scheme)")
    if not parts.hostname:
        raise InvalidURL("bad_url", "URL has no host")
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidURL("bad_url", f"bad port: {exc}") from exc
    try:  # what the fetcher will send: its parser has the last word, and its host is connected to
        host = httpx.URL(url).host
    except (httpx.InvalidURL, UnicodeError, ValueError) as exc:
        raise InvalidURL("bad_url", f"unusable URL: {exc}") from exc
    if not host:
        raise InvalidURL("bad_url", "URL has no host")
    return CheckedURL(url, scheme, host.lower(), port or (443 if scheme == "https" else 80))


def check_url(url: object) -> str:
    """The stripped URL if :func:`parse_url` accepts it."""
    return parse_url(url).url


def canonicalize(url: str) -> str:
    """Normalise a URL: lower-case scheme/host, default port dropped, tracking parameters and
    fragment removed, query sorted (courlan's normalisation)."""
    url = strip_tracking(check_url(url))
    try:
        norm = courlan.normalize_url(url, strict=False, trailing_slash=True)
    except Exception:  # courlan raises on exotic input; the stripped URL is still usable
        norm = url
    return norm or url


def same_site(a: str, b: str) -> bool:
    """True when both URLs are on the same registrable site (for trusting rel=canonical)."""
    ha = (urlsplit(a).hostname or "").lower().removeprefix("www.")
    hb = (urlsplit(b).hostname or "").lower().removeprefix("www.")
    if not ha or not hb:
        return False
    return ha == hb or ha.endswith("." + hb) or hb.endswith("." + ha)


def domain_of(url: str) -> str:
    host = (urlsplit(url).hostname or "").lower()
    return host.removeprefix("www.")


def record_id(canonical_url: str) -> str:
    """Stable 128-bit id (hex) of a canonical URL."""
    return hashlib.blake2b(canonical_url.encode("utf-8"), digest_size=16).hexdigest()
