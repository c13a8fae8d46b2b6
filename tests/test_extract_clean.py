"""Post-cleaning rules (multilingual), author filtering, and the fundus quality floor."""

from __future__ import annotations

import gzip
import json
import os
import re
from collections import Counter
from pathlib import Path

import pytest

from copydesk.transforms.extract.clean import clean_authors, clean_text

EVAL = Path(os.environ.get("COPYDESK_EVAL", Path(__file__).resolve().parents[1] / ".." / "shared" / "eval"))
FUNDUS = EVAL / "fundus"
TRAF_EVAL = EVAL / "trafilatura-eval"
SEED = EVAL.parent / "seed"

BODY = "The council approved the budget on Tuesday after a long debate about schools and roads."


def kept(text: str, **kw) -> str:
    return clean_text(text, **kw).text


@pytest.mark.parametrize("line", [
    "Share this article", "Share this articleComments", "Share this articleClose Button", "Teilen",
    "Artikel teilen", "Partager", "Partager cet article", "Compartir", "Compartir este artículo",
    "ADVERTISEMENT", "Anzeige", "Publicité", "Publicidad", "Advertisement 1Story continues below",
    "You might also like", "Lesen Sie auch", "À lire aussi", "Lee también", "Read more: Council votes on roads",
    "READ MORE: Thorpe Park's new rollercoaster", "Lesen Sie auch: Neue Regeln für Mieter",
    "À lire aussi La natalité russe menacée d’effondrement", "Lee también: El Gobierno aprueba el plan",
    "Sign up for our newsletter to get the latest news", "Jetzt kostenlos testen",
    "Abonnez-vous pour lire la suite", "Suscríbete para seguir leyendo", "We use cookies to improve your experience",
    "Ein Klick für den Datenschutz", "Copyright © AFP 2017-2026. Alle Rechte vorbehalten.",
    # notices matched anywhere in a short line
    '"Hier ist Bayern": Der XY24 Newsletter informiert Sie immer montags bis freitags über das Wichtigste.',
    "Eine Newsübersicht am Morgen und Breaking News: Abonniere den Whatsapp-Kanal von Blatt und bleib informiert.",
    "Ich bin damit einverstanden, dass mir der externe Inhalt angezeigt wird.",
    "Il vous reste 57.09% de cet article à lire. La suite est réservée aux abonnés.",
    "Si continúas leyendo en este dispositivo, no se podrá leer en el otro.",
    "Follow Gadgetsite on Google News and add us as a preferred source to get our expert news.",
    "Reviews and recommendations are unbiased and products are independently selected.",
    "Click here to read the unsealed search warrant.",
    "This is a breaking new story - more to follow",
    # media-player lines, who-is-pictured captions, doubled teaser-card titles, template placeholders
    "02:57 Min.. Verfügbar bis 06.05.2024.",
    "Nach dem Angriff wurden auf dem EU-Gipfel schärfere Sanktionen beschlossen. 18.04.2024 | 0:21 min",
    "Pictured from left, are novelists Jane Roe and John Doe at the book fair.",
    "Murder victims from left: Anna A, Ben B, Carla C",
    "Council Rejects the Road Plan Again Council Rejects the Road Plan Again",
    "$$ARTICLEAD$$",
    "2025年1月14日 01時28分 (1月14日 01時40分更新)",
])
def test_boilerplate_lines_removed(line):
    out = kept(f"{BODY}\n{line}\n{BODY} Again.")
    assert line not in out
    assert out.count("council approved") == 2


@pytest.mark.parametrize("line,credit", [
    ("Copyright Mirwais Najand/AP", "Copyright Mirwais Najand/AP"),
    ("Afghan soldiers at the gate of a compound Copyright Mirwais Najand/AP", "Copyright Mirwais Najand/AP"),
    ("Photo: Reuters", "Photo: Reuters"),
    ("(Foto: dpa)", "Foto: dpa"),
    ("Bild: Maximilian von Lachner", "Bild: Maximilian von Lachner"),
    ("Los geht’s: Von Montag an für 49 Euro. Bild: Maximilian von Lachner", "Bild: Maximilian von Lachner"),
    ("STR/AFP via Getty Images", "STR/AFP via Getty Images"),
    ("© Reuters", "© Reuters"),
])
def test_photo_credits_removed_and_kept(line, credit):
    res = clean_text(f"{BODY}\n{line}\n{BODY}")
    assert line not in res.text
    assert credit in res.photo_credits


@pytest.mark.parametrize("line", [
    "Reuters reported that the talks had stalled, citing three officials familiar with the matter.",
    "She told The Associated Press she would read more about it and share the article with friends.",
    "The company said it would share this data with regulators, and the advertisement was withdrawn.",
    "Lesen Sie auch, was die Experten zu den neuen Regeln für Mieter sagen.",
    "Die Zeitung hatte zuvor über das Foto berichtet, das auf Instagram geteilt wurde.",
    "The mayor, pictured at the opening, said the newsletter from left-wing groups was unfair.",
    "Reporting by local outlets suggested the minister had known for weeks, the paper said.",
    "The match lasted 90 minutes and the second half began at 4:15 in the afternoon.",
    "Our readers said they would subscribe to the idea if the council kept its word.",
])
def test_body_sentences_that_mention_boilerplate_words_are_kept(line):
    assert line in kept(f"{BODY}\n{line}\n{BODY}")


def test_teaser_list_after_heading_removed_but_following_paragraph_kept():
    text = (f"{BODY}\nYou might also like\nFirst teaser headline here\nSecond teaser headline here\n"
            "This paragraph is part of the story and ends with a full stop as prose does.")
    out = kept(text)
    assert "teaser" not in out and "part of the story" in out


def test_kicker_teaser_list_removed_but_fact_list_kept():
    teasers = "\n".join(f"- Baufinanzierung: Experte warnt vor teurem Fehler Nummer {i}" for i in range(4))
    facts = "- The bridge opened in 1932.\n- It is 1,149 metres long.\n- It carries eight lanes."
    out = kept(f"{BODY}\n{teasers}\n{BODY}\n{facts}")
    assert "Baufinanzierung" not in out and "1,149 metres" in out


def test_headline_and_byline_repeated_in_body_removed():
    text = f"Council approves budget\nBy Jane Doe\n{BODY}"
    out = kept(text, title="Council approves budget", authors=["Jane Doe"])
    assert out == BODY


def test_visible_headline_removed_even_if_og_title_differs():
    text = f"Kicker\nCouncil approves the budget for schools and roads\n{BODY}"
    out = kept(text, title="Budget approved | City News", headlines=["Council approves the budget for schools and roads"])
    assert out == BODY
    # a dateline line quoting the visible headline is body text, not the headline
    line = "CITY, March 3 (News) - Council approves the budget for schools and roads, officials say"
    out = kept(f"{line}\n{BODY}", headlines=["Council approves the budget for schools and roads"])
    assert line in out


def test_staff_credit_lines_removed_only_at_the_end():
    credit = "Reporting by Jane Doe in Berlin; Editing by John Roe"
    assert credit not in kept(f"{BODY}\n{BODY} Again.\n{credit}")
    contrib = "Associated Press writer Jane Doe in Paris contributed to this report."
    assert contrib not in kept(f"{BODY}\n{contrib}")
    middle = "\n".join([BODY] * 3 + [credit] + [BODY + f" {i}." for i in range(5)])
    assert credit in kept(middle)


def test_seed_euronews_page():
    files = sorted(SEED.glob("000_*.txt"))
    if not files:
        pytest.skip("../shared/seed not present")
    text = files[0].read_text("utf-8")
    res = clean_text(text, title="Turkey and Russia shut consulates as Taliban advance in Afghanistan")
    for junk in ("Share this article", "ADVERTISEMENT", "You might also like", "Copyright Mirwais Najand/AP",
                 "I went to secret schools"):
        assert junk not in res.text, junk
    assert "Copyright Mirwais Najand/AP" in res.photo_credits
    assert "Turkey and Russia have closed their consulates" in res.text
    assert "NATO allies are also pulling out." in res.text


@pytest.mark.parametrize("raw,authors,agencies", [
    ("By Jane Doe; Share this article", ["Jane Doe"], []),
    ("Von Max Muster", ["Max Muster"], []),
    ("Felix Schröder; Jörg Soldwisch; Dpa", ["Felix Schröder", "Jörg Soldwisch"], ["dpa"]),
    ("Euronews with AP", ["Euronews"], ["AP"]),
    ("Associated Press", [], ["AP"]),
    ("Sophie Foster; Sophie-Foster", ["Sophie Foster"], []),
    ("jane.doe@example.com; Jane Doe; 12 March 2024", ["Jane Doe"], []),
    ("Reuters; Thorsten Kramer", ["Thorsten Kramer"], ["Reuters"]),
])
def test_clean_authors(raw, authors, agencies):
    assert clean_authors(raw) == (authors, agencies)


# --- fundus quality regression --------------------------------------------------------------

_W = re.compile(r"\w+")


def _shingles(t: str) -> Counter:
    w = _W.findall(t or "")
    return Counter(tuple(w[i:i + 4]) for i in range(len(w) - 3))


def score(pages: list[tuple[str, str]]) -> tuple[float, float, float]:
    """The README method: per-page shingle precision/recall, averaged, F1 of the averages."""
    ps, rs = [], []
    for pred, truth in pages:
        p, t = _shingles(pred), _shingles(truth)
        tp = sum((p & t).values())
        fp, fn = sum(p.values()) - tp, sum(t.values()) - tp
        if tp + fp:
            ps.append(tp / (tp + fp))
        if tp + fn:
            rs.append(tp / (tp + fn))
    P, R = sum(ps) / len(ps), sum(rs) / len(rs)
    return P, R, 2 * P * R / (P + R)


# Achieved on all 258 pages: P 0.962 R 0.971 F1 0.966 (plain trafilatura: 0.931/0.967/0.949).
F1_FLOOR = 0.962
RECALL_FLOOR = 0.966
PRECISION_FLOOR = 0.957
# trafilatura-eval, 990 pages, snippets: P 0.936 R 0.933 F1 0.935 (plain trafilatura 0.908/0.941/0.924;
# issue 15 asks for plain + 0.01 = 0.934)
TRAF_EVAL_F1_FLOOR = 0.933
TRAF_EVAL_RECALL_FLOOR = 0.928
WIRE_FLOOR = 0.95  # precision and recall of the agency list (issue 5's aim)


def test_fundus_quality_floor():
    if not (FUNDUS / "ground-truth.json").exists():
        pytest.skip("../shared/eval/fundus not present")
    from copydesk.transforms.extract.pool import ExtractFailure, ExtractPool

    gt = json.loads((FUNDUS / "ground-truth.json").read_text("utf-8"))
    ids = sorted(gt)
    pages = [(gzip.decompress((FUNDUS / "html" / f"{i}.html.gz").read_bytes()).decode("utf-8"), gt[i]["url"])
             for i in ids]
    with ExtractPool() as pool:
        res = pool.extract_many(pages)
    pairs = [("" if isinstance(r, ExtractFailure) else r.text, gt[i]["articleBody"]) for i, r in zip(ids, res)]
    P, R, F = score(pairs)
    assert F >= F1_FLOOR, (P, R, F)
    assert R >= RECALL_FLOOR, (P, R, F)
    assert P >= PRECISION_FLOOR, (P, R, F)
    # Wire attribution on the same extractions, against the hand labels (benchmarks/bench_wire.py).
    labels = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "wire_labels.json")
                        .read_text("utf-8"))["labels"]
    tp = fp = fn = 0
    for i, r in zip(ids, res):
        if i in labels:
            pred, gold = (set() if isinstance(r, ExtractFailure) else set(r.wire.agencies)), set(labels[i])
            tp, fp, fn = tp + len(pred & gold), fp + len(pred - gold), fn + len(gold - pred)
    assert tp / (tp + fp) >= WIRE_FLOOR and tp / (tp + fn) >= WIRE_FLOOR, (tp, fp, fn)


def test_language_comes_from_the_page_when_trafilatura_gives_none():
    from trafilatura.utils import load_html

    from copydesk.transforms.extract.core import extract_article, page_language

    body = "<p>" + "The council met on Tuesday and voted on the budget for the coming year. " * 6 + "</p>"
    assert extract_article(f'<html lang="en-US"><body><article>{body}</article></body></html>').language == "en"
    assert page_language(load_html(f'<html><head><meta property="og:locale" content="fr_FR"></head>'
                                   f'<body>{body}</body></html>')) == "fr"
    assert page_language(load_html(f'<html><head><meta http-equiv="Content-Language" content="de"></head>'
                                   f'<body>{body}</body></html>')) == "de"
    assert page_language(load_html(f'<html lang="x"><body>{body}</body></html>')) is None  # not a language tag
    assert page_language(load_html(f"<html><body>{body}</body></html>")) is None


def test_trafilatura_eval_quality_floor():
    """trafilatura's own evaluation set (its defaults were tuned on it): snippets that must and must
    not appear, counted over all pages; pages decoded as the fetch stage decodes them."""
    if not (TRAF_EVAL / "ground-truth.json").exists():
        pytest.skip("../shared/eval/trafilatura-eval not present")
    from copydesk.transforms.extract.pool import ExtractFailure, ExtractPool
    from copydesk.transforms.fetch.charset import decode_html
    from copydesk.transforms.fetch.errors import FetchFailure

    gt = json.loads((TRAF_EVAL / "ground-truth.json").read_text("utf-8"))
    ids = sorted(gt)
    pages = []
    for i in ids:
        raw = gzip.decompress((TRAF_EVAL / "html" / f"{i}.html.gz").read_bytes())
        try:
            html = decode_html(raw)[0]
        except FetchFailure:
            html = raw.decode("utf-8", errors="replace")
        pages.append((html, gt[i]["url"]))
    with ExtractPool() as pool:
        res = pool.extract_many(pages)
    tp = fp = fn = 0
    for i, r in zip(ids, res):
        text = "" if isinstance(r, ExtractFailure) else r.text
        found = sum(s in text for s in gt[i]["with"])
        tp, fn = tp + found, fn + len(gt[i]["with"]) - found
        fp += sum(s in text for s in gt[i]["without"])
    P, R = tp / (tp + fp), tp / (tp + fn)
    F = 2 * P * R / (P + R)
    assert F >= TRAF_EVAL_F1_FLOOR and R >= TRAF_EVAL_RECALL_FLOOR, (P, R, F, tp, fp, fn)
