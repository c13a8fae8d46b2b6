"""HTML-level pruning before trafilatura and the client-rendered (script data) recovery."""

from __future__ import annotations

import json

import lxml.html
import pytest
import trafilatura

from copydesk.transforms.extract.core import ExtractConfig, extract_article
from copydesk.transforms.extract.prune import embedded_body_html, page_headlines, prune_tree

STORY = " ".join(
    f"Paragraph {i} of the story tells how the council spent the budget on schools, roads and parks."
    for i in range(3)
)


def page(inner: str, title: str = "Council approves budget") -> str:
    return (f"<html><head><title>{title}</title><meta property='og:title' content='{title}'></head>"
            f"<body>{inner}</body></html>")


def article(extra: str = "", h1: str = "Council approves budget") -> str:
    paras = "".join(f"<p>{STORY} Part {k}.</p>" for k in range(4))
    return f"<article><h1>{h1}</h1>{paras}{extra}</article>"


def pruned_text(html: str) -> str:
    tree = lxml.html.fromstring(html)
    prune_tree(tree)
    return tree.text_content()


@pytest.mark.parametrize("box", [
    '<div class="factbox"><p>Fakta: the bridge is 1,149 metres long.</p></div>',
    '<div class="article-fact-box"><p>Fakta: the bridge is 1,149 metres long.</p></div>',
    '<section id="info_box"><p>Fakta: the bridge is 1,149 metres long.</p></section>',
    '<div class="author-bio"><p>Fakta: Jane Doe has covered the council since 2010.</p></div>',
    '<blockquote class="twitter-tweet"><p>Fakta: what a day at the council!</p></blockquote>',
    '<div aria-label="Newsletter sign-up"><p>Fakta: get our daily briefing.</p></div>',
])
def test_boxes_inside_the_article_are_pruned(box):
    text = pruned_text(page(article(box)))
    assert "Fakta" not in text and "Part 3" in text


@pytest.mark.parametrize("markup", [
    '<div class="facts-and-figures-wrapper">{}</div>',  # "facts" token on the story wrapper
    '<div aria-label="Fact box">{}</div>',
])
def test_a_wrapper_holding_most_of_the_story_is_kept(markup):
    html = page(markup.format(article()) + "<p>Short footer line.</p>")
    assert "Part 3" in pruned_text(html)


def test_class_words_that_only_contain_a_token_are_not_boxes():
    html = page(article('<div class="bionic-reading"><p>Fakta stays: part of the story.</p></div>'
                        '<div class="factory-news"><p>Factory stays too.</p></div>'))
    text = pruned_text(html)
    assert "Fakta stays" in text and "Factory stays" in text


def test_page_headlines():
    tree = lxml.html.fromstring(page("<h1> Council  approves\nbudget </h1><h1>More news</h1>"))
    assert page_headlines(tree) == ["Council approves budget", "More news"]


def _client_rendered(body_html: str) -> str:
    data = json.dumps({"props": {"article": {"title": "Council approves budget", "contentHtml": body_html}}})
    return page(f'<div id="root"></div><script>window.__DATA__ = {data};</script>')


def test_embedded_body_html_from_script_data():
    body = "".join(f"<p>{STORY} Part {k}.</p>" for k in range(4))
    found = embedded_body_html(lxml.html.fromstring(_client_rendered(body)))
    assert found is not None and "Part 3" in found and "<p>" in found
    assert embedded_body_html(lxml.html.fromstring(page(article()))) is None


def test_extract_recovers_a_client_rendered_page():
    body = "".join(f"<p>{STORY} Part {k}.</p>" for k in range(4))
    res = extract_article(_client_rendered(body), "https://example.com/news/1")
    assert "Part 3" in res.text and "Part 0" in res.text
    # trafilatura alone (and its baseline) finds no body on such a page
    assert "Part 3" not in (trafilatura.extract(_client_rendered(body)) or "")
    assert "Part 3" not in trafilatura.baseline(_client_rendered(body))[1]


def test_extract_prunes_fact_boxes_end_to_end():
    html = page(article('<aside-like class="factbox"><p>Fakta: the bridge is 1,149 metres long and opened in '
                        '1932 after six years of construction work.</p></aside-like>'))
    assert "Fakta" not in extract_article(html, "https://example.com/a").text
    assert "Fakta" in extract_article(html, "https://example.com/a", ExtractConfig(prune=False)).text
