"""The extraction failure kinds of issue 15 (and damaged HTML, issue 16), each on a minimal page
written for the test: the rule must keep the story, not just pass on a real page."""

from __future__ import annotations

import lxml.html
import pytest

from copydesk.transforms.extract.cascade import extractor_options, looks_wrong, run_cascade
from copydesk.transforms.extract.clean import clean_text
from copydesk.transforms.extract.prune import prune_tree
from copydesk.transforms.extract.repair import repair_html
from copydesk.transforms.extract.core import ExtractConfig, ExtractionError, extract_article

SENTENCES = [
    "The council approved the budget on Tuesday after a long debate about schools and roads.",
    "Members said the money for the new bridge would come from the regional transport fund.",
    "The mayor told reporters that construction could begin as early as next spring if all goes well.",
    "Opposition members argued that the plan ignored the needs of the eastern districts entirely.",
    "A final vote on the details of the bridge contract is expected before the end of the year.",
]
STORY = "".join(f"<p>{s} {SENTENCES[(k + 1) % 5]}</p>" for k, s in enumerate(SENTENCES))


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
    "VEA TAMBIÉN: El puente abre el lunes", "Zum Weiterlesen:", "Kategorie: News", "Keine Kommentare",
    "If you enjoyed reading this post, share it", "We want to hear what you think about this article.",
    "Video verfügbar bis 28.02.2021",
])
def test_multilingual_teasers_and_notices_removed(line):
    out = clean_text(f"{SENTENCES[0]}\n{line}\n{SENTENCES[1]}").text
    assert line not in out and SENTENCES[1] in out


# --- recovery prefers a plausible short body (or the headline) over a page dump --------------

NAV = "<nav><ul>" + "".join(
    f"<li><a href='/s{i}'>Section number {i} of the site</a></li>" for i in range(30)) + "</ul></nav>"
FOOT = "<footer><p>© 2025 Daily Pictures</p><ul>" + "".join(
    f"<li><a href='/f{i}'>Legal page {i}</a></li>" for i in range(10)) + "</ul></footer>"


def test_headline_only_picture_post_keeps_its_headline_not_a_page_dump():
    html = page(NAV + "<main><article><h1>Sunset over the harbour</h1><figure><img src='a.jpg'>"
                "<figcaption>Photo: Jane Roe</figcaption></figure></article></main>" + FOOT,
                title="Sunset over the harbour | Daily Pictures",
                head="<meta property='og:title' content='Sunset over the harbour'>")
    out = extract_article(html, "https://example.com/pic").text
    assert out == "Sunset over the harbour"


def test_short_body_is_kept_over_a_link_list_rescue():
    short = "The bridge opens on Monday, the council said."
    html = page(NAV + f"<main><article><h1>Bridge opens</h1><p>{short}</p></article></main>" + FOOT,
                title="Bridge opens")
    out = extract_article(html, "https://example.com/short").text
    assert short in out
    assert "Section number 7 of the site" not in out


# --- the quick (main extractor) result is checked before it is trusted ----------------------

def _quick(html: str):
    tree = lxml.html.fromstring(html)
    from trafilatura.core import _prepare_tree
    from trafilatura.main_extractor import extract_content

    opts = extractor_options()
    cleaned, backup = _prepare_tree(tree, opts, None)
    body, text = extract_content(cleaned, opts)
    return body, text, backup


def test_a_long_story_extracted_whole_is_trusted():
    body, text, backup = _quick(page(f"<article><h1>Budget</h1>{STORY}{STORY}</article>"))
    assert not looks_wrong(body, text, backup)


@pytest.mark.parametrize("why,html", [
    ("short", page(f"<article><p>{SENTENCES[0]}</p></article>")),
    ("much shorter than the largest paragraph block",
     page(f"<div class='main'><article>{STORY}</article></div>"
          f"<div>{''.join(f'<p>{s} {s} {s}</p>' for s in SENTENCES * 3)}</div>")),
])
def test_a_suspect_quick_result_is_checked(why, html):
    body, text, backup = _quick(html)
    if why.startswith("much shorter"):
        # the main extractor took the <article>; the page's largest paragraph block is elsewhere
        assert SENTENCES[0] in text and len(text) < 0.5 * len(backup.text_content())
    assert looks_wrong(body, text, backup), why


def test_auto_runs_the_comparison_only_when_the_quick_result_looks_wrong():
    good = lxml.html.fromstring(page(f"<article><h1>Budget</h1>{STORY}{STORY}</article>"))
    short = lxml.html.fromstring(page(f"<article><p>{SENTENCES[0]}</p></article>"))
    assert not run_cascade(good, extractor_options()).compared
    assert run_cascade(short, extractor_options()).compared
    good = lxml.html.fromstring(page(f"<article><h1>Budget</h1>{STORY}{STORY}</article>"))
    assert run_cascade(good, extractor_options(), gate=False).compared  # "always"


# --- damaged HTML is repaired before the page is given up (issue 16) ------------------------

BODY_HTML = f"<article><h1>Budget</h1>{STORY}</article>"


@pytest.mark.parametrize("damaged", [
    f"<html><head><title>Council approves budget</head><body>{BODY_HTML}</body></html>",  # unclosed title
    f"<html lang='en'\n<img src='t.gif' alt='\n<head><title>T</title></head><body>{BODY_HTML}</body></html>",
])
def test_damaged_page_is_repaired_not_dead_lettered(damaged):
    out = extract_article(damaged, "https://example.com/damaged").text
    assert SENTENCES[2] in out


def test_repair_leaves_a_sound_page_alone_and_a_page_without_text_is_still_empty():
    sound = page(BODY_HTML)
    assert repair_html(sound) == sound
    with pytest.raises(ExtractionError) as err:
        extract_article("<html><head><title>Nothing</title></head><body><div></div></body></html>")
    assert err.value.reason == "empty"


def test_repair_closes_a_runaway_title_and_ends_run_in_tags():
    assert "</title><meta" in repair_html("<html><head><title>T<meta charset='utf-8'></head><body></body></html>")
    assert repair_html('<html lang="en"<img src="a.gif"><body>x</body></html>').startswith('<html lang="en"><img')
