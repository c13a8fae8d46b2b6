"""Shared helpers of the dedup tests: deterministic synthetic stories and records."""

from __future__ import annotations

import random

from copydesk.schemas.records import ArticleRecord, Envelope, SourceRef
from copydesk.transforms.dedup.minhash import content_hash

FNAPI = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"

_VOCAB = [f"{a}{b}" for a in ("ka", "lo", "mi", "ne", "po", "ru", "sa", "ti", "vu", "ze", "bra", "cho")
          for b in ("n", "ra", "tel", "mos", "vik", "dun", "pe", "lis", "gor", "hast", "q", "wen")]


def story(seed: int, words: int = 220) -> str:
    """A deterministic pseudo-text of ``words`` words in paragraphs of 40 words."""
    rng = random.Random(seed)
    ws = [rng.choice(_VOCAB) for _ in range(words)]
    return "\n\n".join(" ".join(ws[i:i + 40]) + "." for i in range(0, words, 40))


def wrap(text: str) -> str:
    """An outlet template around a body."""
    return "Advertisement. Sign up for our newsletter.\n\n" + text + "\n\nCopyright. All rights reserved."


def trim(text: str) -> str:
    """The body without its last paragraph."""
    return "\n\n".join(text.split("\n\n")[:-1])


def update(text: str, seed: int) -> str:
    """The body with a short new paragraph added and the lead's end changed (~12% new text:
    a same-site page carrying the whole story plus 15% or more of its own is a roundup,
    not an update)."""
    ps = text.split("\n\n")
    ps.insert(2, story(seed + 10_000, 20))
    ps[0] = " ".join(ps[0].split()[:30]) + " " + story(seed + 20_000, 10)
    return "\n\n".join(ps)


def rec(url_id: str, domain: str, text: str, minute: int = 0, offset: int = 0, day: int = 1) -> ArticleRecord:
    """An extracted article record as the extract stage would build it."""
    url = f"https://{domain}/{url_id}"
    ch = content_hash(text)
    return ArticleRecord(
        id=f"id-{domain}-{url_id}", url=url, canonical_url=url, final_url=url, source_domain=domain,
        text=text, fingerprint=ch, content_hash=ch, title=url_id,
        fetched_at=f"2025-03-{day:02d}T10:{minute:02d}:00+00:00",
        published_at=f"2025-03-{day:02d}T09:{minute:02d}:00+00:00",
        topic="urls", partition=0, offset=offset,
    )


def envelope(record: ArticleRecord) -> Envelope:
    """The record as the extract stage emits it: in an envelope with its source offset."""
    return Envelope(record, SourceRef(topic=record.topic, partition=record.partition, offset=record.offset))
