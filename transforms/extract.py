"""Article extraction: trafilatura with metadata (pure function) and the Beam stage.

``extract_article`` is the one extraction function; ``copydesk extract`` and the streaming
pipeline both call it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import apache_beam as beam
import trafilatura

from copydesk.schemas.reasons import Reason, Stage
from copydesk.schemas.records import ArticleRecord, DeadLetter, FetchedPage, WireInfo


@dataclass(slots=True, frozen=True, kw_only=True)
class ExtractConfig:
    fast: bool = True
    max_html_chars: int = 5_000_000
    min_text_chars: int = 1


@dataclass(slots=True)
class Extracted:
    text: str
    title: str | None = None
    authors: list[str] = field(default_factory=list)
    published_at: str | None = None
    language: str | None = None
    site_name: str | None = None
    description: str | None = None
    canonical_url: str | None = None
    categories: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    image: str | None = None
    wire: WireInfo = field(default_factory=WireInfo)
    photo_credits: list[str] = field(default_factory=list)


class ExtractionError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def extract_article(html: str, url: str | None = None, config: ExtractConfig = ExtractConfig()) -> Extracted:
    """Extract the article body and metadata from one page; raise ExtractionError(empty) if none."""
    if len(html) > config.max_html_chars:
        raise ExtractionError(Reason.TOO_LARGE, f"page has {len(html)} characters (max {config.max_html_chars})")
    doc = trafilatura.bare_extraction(
        html, url=url, with_metadata=True, include_comments=False, fast=config.fast, as_dict=False
    )
    text = (doc.text if doc is not None else None) or ""
    if len(text.strip()) < config.min_text_chars:
        raise ExtractionError(Reason.EMPTY, "no article text found")
    authors = [a.strip() for a in (doc.author or "").split(";") if a.strip()]
    return Extracted(
        text=text.strip(),
        title=doc.title,
        authors=authors,
        published_at=doc.date,
        language=doc.language,
        site_name=doc.sitename,
        description=doc.description,
        canonical_url=doc.url if doc.url and doc.url != url else None,
        categories=list(doc.categories or []),
        tags=list(doc.tags or []),
        image=doc.image,
    )


class _ExtractDoFn(beam.DoFn):
    DEAD = "dead_letter"

    def __init__(self, config: ExtractConfig) -> None:
        self.config = config

    def process(self, page: FetchedPage):
        from copydesk.schemas.codec import dead_letter
        from copydesk.transforms.article import build_article

        msg = page.message
        try:
            ext = extract_article(page.html, page.final_url or msg.url, self.config)
            yield build_article(page, ext)
        except ExtractionError as exc:
            yield beam.pvalue.TaggedOutput(self.DEAD, dead_letter(
                Stage.EXTRACT, exc.reason, str(exc), ref=msg.ref, raw=msg.raw, url=msg.url))
        except Exception as exc:  # an extractor bug must not fail the bundle: dead-letter it
            yield beam.pvalue.TaggedOutput(self.DEAD, dead_letter(
                Stage.EXTRACT, Reason.EXTRACT_ERROR, f"{type(exc).__name__}: {exc}", ref=msg.ref,
                raw=msg.raw, url=msg.url))


class ExtractArticles(beam.PTransform):
    """FetchedPage -> (ArticleRecord, DeadLetter)."""

    def __init__(self, config: ExtractConfig = ExtractConfig()) -> None:
        super().__init__()
        self.config = config

    def expand(self, pages):
        out = pages | "Extract" >> beam.ParDo(_ExtractDoFn(self.config)).with_outputs(
            _ExtractDoFn.DEAD, main="articles")
        return out.articles, out[_ExtractDoFn.DEAD]
