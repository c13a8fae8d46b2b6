"""Assemble the output record from a fetched page and its extraction (pure function)."""

from __future__ import annotations

from copydesk.schemas.codec import now_iso
from copydesk.schemas.records import ArticleRecord, FetchedPage
from copydesk.transforms.extract.core import Extracted
from copydesk.transforms.urls import InvalidURL, canonicalize, domain_of, record_id, same_site
from copydesk.transforms.words import content_hash

def choose_canonical_url(received_url: str, final_url: str, page_canonical: str | None) -> str:
    """The page's rel=canonical when it is on the same site as the final URL, else the final URL."""
    try:
        final = canonicalize(final_url)
    except InvalidURL:
        final = canonicalize(received_url)
    if page_canonical:
        try:
            cand = canonicalize(page_canonical)
        except InvalidURL:
            return final
        if same_site(cand, final):
            return cand
    return final


def build_article(page: FetchedPage, ext: Extracted) -> ArticleRecord:
    msg = page.message
    canonical = choose_canonical_url(msg.url, page.final_url or msg.url, ext.canonical_url)
    chash = ext.content_hash or content_hash(ext.text)  # the worker's, from the tokens of the sketch
    ref = msg.ref
    return ArticleRecord(
        id=record_id(canonical),
        url=msg.url,
        canonical_url=canonical,
        final_url=page.final_url or msg.url,
        source_domain=domain_of(canonical) or domain_of(page.final_url or msg.url),
        text=ext.text,
        fingerprint=chash,  # replaced by the near-duplicate fingerprint in the dedup stage
        content_hash=chash,
        site_name=ext.site_name,
        title=ext.title,
        authors=list(ext.authors),
        published_at=ext.published_at,
        language=ext.language,
        description=ext.description,
        categories=list(ext.categories),
        tags=list(ext.tags),
        image=ext.image,
        wire=ext.wire,
        photo_credits=list(ext.photo_credits),
        fetched_at=page.fetched_at,
        processed_at=now_iso(),
        input_id=msg.id,
        input_source=msg.source,
        discovered_at=msg.discovered_at,
        topic=ref.topic,
        partition=ref.partition,
        offset=ref.offset,
    )
