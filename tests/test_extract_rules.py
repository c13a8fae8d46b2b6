"""The extraction failure kinds of issue 15 (and damaged HTML, issue 16), each on a minimal page
written for the test: the rule must keep the story, not just pass on a real page."""

from __future__ import annotations

import lxml.html
import pytest

from copydesk.transforms.extract.cascade import extractor_options, looks_wrong, run_cascade
from copydesk.transforms.extract.clean import clean_text
from copydesk.transforms.extract.prune import prune_tree
from copydesk.transforms.extract.repair import repair_html
from copydesk.transforms.extract.stage import ExtractConfig, ExtractionError, extract_article

SENTENCES = [
    "The council approved the budget on Tuesday after a long debate about schools and roads.",
    "Members said the money for the new bridge would come from the regional transport fund.",
    "The mayor told reporters that construction could begin as early as next spring if all goes well.",
    "Opposition members argued that the plan ignored the needs of the eastern districts entirely.",
    "A final vote on the details of the bridge contract is expected before the end of the year.",
]
STORY = "".join(f"<p>{s} {s}</p>" for s in SENTENCES)


def page(body: str, title: str = "Council approves budget", head: str = "") -> str:
    return f"<html><head><title>{title}</title>{head}</head><body>{body}</body></html>"


# --- line rules have length limits -----------------------------------------------------------

def test_doubled_headline_line_is_a_teaser_card_but_a_story_printed_twice_in_one_line_is_kept():
    card = "Council Rejects the Road Plan Again Council Rejects the Road Plan Again"
    story = " ".join(SENTENCES)
    out = clean_text(f"{SENTENCES[0]}\n{card}\n{story} {story}\n{SENTENCES[1]}").text
    assert card not in out
    assert f"{story} {story}" in out


# --- class tokens: taxonomy classes name what a post is about, not what an element is --------

def test_taxonomy_class_naming_a_social_network_does_not_prune_the_post():
    html = page(f'<div class="post entry-category-twitter tag-instagram"><h1>Budget</h1>{STORY}</div>'
                '<div class="comments">' + "<p>Great post, thanks for sharing this with us!</p>" * 40 + "</div>")
    tree = lxml.html.fromstring(html)
    assert prune_tree(tree) == 0
    assert SENTENCES[2] in tree.text_content()


def test_a_real_embed_class_is_still_pruned():
    html = page(f'<article>{STORY}<blockquote class="twitter-tweet"><p>Look at this bridge</p></blockquote>'
                "</article>")
    tree = lxml.html.fromstring(html)
    assert prune_tree(tree) == 1
    assert "Look at this bridge" not in tree.text_content()
