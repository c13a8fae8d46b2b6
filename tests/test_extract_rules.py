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


# --- cleaning keeps real sentences ----------------------------------------------------------

@pytest.mark.parametrize("line", [
    "Related: the council also approved a smaller plan for the eastern districts, members said.",
    "Read more: the full report runs to 400 pages and was published by the ministry on Monday.",
])
def test_teaser_prefix_followed_by_a_sentence_is_the_story(line):
    out = clean_text(f"{SENTENCES[0]}\n{SENTENCES[1]}\n{line}\n{SENTENCES[2]}\n{SENTENCES[3]}").text
    assert line in out


def test_teaser_prefix_followed_by_a_headline_is_a_teaser():
    out = clean_text(f"{SENTENCES[0]}\nRead more: Council votes on roads\n{SENTENCES[1]}").text
    assert "Council votes on roads" not in out


def test_follow_me_on_twitter_inside_the_story_is_kept_but_a_closing_prompt_goes():
    inner = ("In her last post she thanked the volunteers and asked readers to follow her on Twitter "
             "for updates on the bridge and the vote.")
    lines = SENTENCES * 2 + [inner] + SENTENCES * 2
    out = clean_text("\n".join(lines + ["Follow us on Twitter and Facebook"])).text
    assert inner in out
    assert "Follow us on Twitter and Facebook" not in out


def test_a_schedule_list_is_not_a_teaser_list():
    schedule = ["- Monday: Opening of the bridge exhibition in the town hall",
                "- Tuesday: Public hearing on the eastern districts plan",
                "- Wednesday: Final vote of the council on the contract"]
    teasers = ["- Politics: Council rejects the road plan again",
               "- Sport: Local team wins the regional cup final",
               "- Culture: New museum opens its doors to visitors"]
    out = clean_text("\n".join([SENTENCES[0], *schedule, SENTENCES[1], *teasers, SENTENCES[2]])).text
    assert all(item in out for item in schedule)
    assert not any(item in out for item in teasers)


@pytest.mark.parametrize("line", [
    "Lea más: El Gobierno aprueba el plan de carreteras", "Mire: El alcalde inaugura el puente",
    "LE PUEDE INTERESAR: La ficha del nuevo contrato", "Notas relacionadas", "Dowiedz się więcej",
    "Lesen Sie auch die folgenden Beiträge:", "Das Thema könnte dich auch interessieren:", "Mehr Themen:",
    "Pour lire la suite de cet article, abonnez-vous", "To view the full story, please subscribe to The Daily",
    "Follow The Gazette on Twitter and Instagram", "ANZEIGE - Heute mal ausgehen? Wie wäre es mit:",
    "Sie sind aktuell nicht eingeloggt.", "Hazte miembro y disfruta de beneficios exclusivos",
])
def test_multilingual_teasers_and_notices_removed(line):
    out = clean_text(f"{SENTENCES[0]}\n{line}\n{SENTENCES[1]}").text
    assert line not in out and SENTENCES[1] in out
