"""Wire attribution: credits count, photo credits and body mentions do not."""

from __future__ import annotations

from pathlib import Path

import pytest

from copydesk.transforms.extract.wire import agency_code, detect_wire

SEED = Path(__file__).resolve().parents[1] / ".." / "shared" / "seed"
BODY = "The council approved the budget on Tuesday after a long debate about schools and roads."


def test_seed_euronews_with_ap():
    files = sorted(SEED.glob("000_*.txt"))
    if not files:
        pytest.skip("../shared/seed not present")
    w = detect_wire(files[0].read_text("utf-8"))
    assert w.agencies == ["AP"]
    assert w.attribution == "By Euronews with AP"


def test_ap_dateline():
    w = detect_wire(f"KABUL, Afghanistan (AP) — {BODY}\n{BODY}")
    assert w.agencies == ["AP"] and w.dateline == "KABUL, Afghanistan (AP) —"


def test_reuters_dateline():
    w = detect_wire(f"WASHINGTON, March 7 (Reuters) - {BODY}")
    assert w.agencies == ["Reuters"] and w.dateline.startswith("WASHINGTON")


@pytest.mark.parametrize("line,code", [
    ("mit Material von dpa", "dpa"), ("(dpa)", "dpa"), ("avec AFP", "AFP"), ("— Agence France-Presse", "AFP"),
    ("Con información de EFE", "EFE"), ("With files from The Associated Press", "AP"), ("SDA/sep", "SDA"),
    ("Additional reporting from PA", "PA"), ("(ANSA)", "ANSA"), ("By Euronews with AP", "AP"),
])
def test_signoffs(line, code):
    w = detect_wire(f"{BODY}\n{BODY}\n{line}")
    assert w.agencies == [code] and w.attribution == line


@pytest.mark.parametrize("line", [
    "Copyright Mirwais Najand/AP", "Foto: dpa", "Photo: Reuters", "STR/AFP via Getty Images",
    "Reuters reported that the talks had stalled.", "She told The Associated Press she would stay.",
    "According to AFP, three people were injured.",
])
def test_not_attribution(line):
    assert detect_wire(f"{BODY}\n{line}\n{BODY}").agencies == []


def test_mention_far_from_edges_not_counted():
    text = "\n".join([BODY] * 8 + ["(dpa)"] + [BODY] * 8)
    assert detect_wire(text).agencies == []


def test_authors_site_and_html():
    assert detect_wire(BODY, authors=["Dpa"]).agencies == ["dpa"]
    assert detect_wire(BODY, site="https://apnews.com/article/x").agencies == ["AP"]
    assert detect_wire(BODY, site="www.reuters.com").agencies == ["Reuters"]
    html = '<meta name="author" content="AFP"><p>x</p>'
    assert detect_wire(BODY, html=html).agencies == ["AFP"]
    assert detect_wire(BODY, html='{"image":{"author":{"name":"EFE/ J.J. Guillén"}}}').agencies == []


def test_agency_code():
    assert agency_code("Associated Press") == "AP"
    assert agency_code("Deutsche Presse-Agentur") == "dpa"
    assert agency_code("Anadolu Ajansı") == "Anadolu"
    assert agency_code("ap") is None  # "ap" in lower case is not the agency
    assert agency_code("Jane Doe") is None


LEAD = "Thousands marched through the capital on Monday in support of the disputed draft law on agents."
STORY = ("The bill would require organisations that receive more than a fifth of their funding from abroad "
         "to register as foreign agents, officials said.")


def test_byline_after_a_standfirst_is_found_even_when_the_lead_is_also_in_head():
    html = (f'<html><head><meta name="description" content="{LEAD}"></head><body>'
            f"<p class=\"summary\">{LEAD}</p>"
            f'<div class="byline">By&nbsp;<a href="/x">Diana Resnik</a>\n   with&nbsp;<b>AP</b></div>'
            f"<p>{STORY}</p></body></html>")
    w = detect_wire(f"{LEAD}\n{STORY}", html=html)
    assert w.agencies == ["AP"] and w.attribution == "AP"


def test_bare_agency_name_under_a_picture_is_a_photo_credit():
    html = (f"<html><body><p>{LEAD}</p><picture><img src=\"a.jpg\"></picture>"
            f'<div class="sc-a1">Fans held a banner</div><div class="sc-b2">REUTERS</div>'
            f"<p>{STORY}</p><p>{STORY} More.</p></body></html>")
    assert detect_wire(f"{LEAD}\n{STORY}\n{STORY} More.", html=html).agencies == []
    byline = html.replace('<picture><img src="a.jpg"></picture><div class="sc-a1">Fans held a banner</div>', "")
    assert detect_wire(f"{LEAD}\n{STORY}\n{STORY} More.", html=byline).agencies == ["Reuters"]
