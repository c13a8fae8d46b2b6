"""URL canonicalisation and stable record ids (pure functions).

The record id is derived from the canonical URL only, so the same input gives the same id
on every replay and a replay's records replace rather than multiply downstream.
"""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import courlan

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
    """The string is not an absolute http(s) URL we can fetch."""

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


def check_url(url: str) -> str:
    """Return the stripped URL or raise :class:`InvalidURL` with a reason code."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidURL("no_url", "empty URL")
    url = url.strip()
    if any(c in url for c in (" ", "\n", "\r", "\t")):
        raise InvalidURL("bad_url", "URL contains whitespace")
    if len(url) > 8192:
        raise InvalidURL("bad_url", f"URL is {len(url)} characters long (max 8192)")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidURL("bad_url", f"unparsable URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if not scheme or "://" not in url:
        raise InvalidURL("bad_url", "not an absolute URL")
    if scheme not in ("http", "https"):
        raise InvalidURL("unsupported_scheme", f"scheme {scheme!r} is not http or https")
    if not parts.hostname:
        raise InvalidURL("bad_url", "URL has no host")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise InvalidURL("bad_url", f"bad port: {exc}") from exc
    return url


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
