"""Wire agencies: the one table of what copydesk knows about each agency (a leaf module).

Each agency has a canonical code (what records carry in ``wire.agencies``), a regex of the
ways its name is printed (datelines, bylines, sign-offs: ``extract/wire.py``), the spellings
in which it stands as an *author* ("The Associated Press": ``extract/clean.py``), and the
domains it publishes on (a page there is the agency's own copy: ``extract/wire.py`` attributes
it, ``dedup/`` makes it the canonical member of its cluster). Codes of two letters are matched
case-sensitively (AP, PA, AA, TT, CP are ordinary words or abbreviations in lower case).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Agency", "TABLE", "NAME_PATTERNS", "AUTHOR_NAMES", "DOMAINS", "DOMAIN_CODES", "code_for_domain"]


@dataclass(frozen=True)
class Agency:
    code: str
    pattern: str  # regex alternatives, matched case-insensitively unless marked (?-i:...)
    authors: tuple[str, ...] = ()  # casefolded spellings as a byline/author field
    domains: tuple[str, ...] = ()


TABLE: tuple[Agency, ...] = (
    Agency("AP", r"(?-i:AP)|(?:The )?Associated Press", ("ap", "associated press", "the associated press"),
           ("apnews.com", "ap.org")),
    Agency("Reuters", r"(?:Thomson )?Reuters", ("reuters", "thomson reuters"), ("reuters.com",)),
    Agency("AFP", r"AFP|Agence France[- ]Presse", ("afp", "agence france-presse", "agence france presse"),
           ("afp.com",)),
    Agency("dpa", r"dpa(?:-AFX|-infocom)?|Deutsche Presse-Agentur",
           ("dpa", "deutsche presse-agentur", "dpa-afx", "dpa-infocom"), ("dpa.com", "dpa-international.com")),
    Agency("EFE", r"(?:Agencia )?EFE", ("efe", "agencia efe"), ("efe.com",)),
    Agency("ANSA", r"ANSA", ("ansa",), ("ansa.it",)),
    Agency("PA", r"(?-i:PA)(?: Media| Wire)?|Press Association", ("pa", "pa media", "press association"),
           ("pa.media",)),
    Agency("Kyodo", r"Kyodo(?: News)?", ("kyodo", "kyodo news"), ("kyodonews.net", "kyodonews.jp")),
    Agency("Xinhua", r"Xinhua(?: News Agency)?", ("xinhua",), ("xinhuanet.com", "news.cn")),
    Agency("Anadolu", r"Anadolu(?: Agency| Ajans[ıi])|(?-i:AA)",
           ("anadolu", "anadolu agency", "anadolu ajansı", "aa"), ("aa.com.tr",)),
    Agency("KNA", r"KNA", ("kna",), ("kna.de",)),
    Agency("epd", r"epd", ("epd",), ("epd.de",)),
    Agency("APA", r"APA", ("apa",), ("apa.at",)),
    Agency("SDA", r"(?:Keystone-)?SDA|Keystone-ATS", ("sda", "keystone-sda"), ("keystone-sda.ch", "sda-ats.ch")),
    Agency("Belga", r"Belga", ("belga",), ("belga.be", "belganewsagency.eu")),
    Agency("ANP", r"(?-i:ANP)", ("anp",), ("anp.nl",)),
    Agency("TT", r"(?-i:TT)", ("tt",), ("tt.se",)),
    Agency("NTB", r"NTB", ("ntb",), ("ntb.no",)),
    Agency("Ritzau", r"Ritzau", ("ritzau",), ("ritzau.dk",)),
    Agency("Europa Press", r"Europa Press", ("europa press",), ("europapress.es",)),
    Agency("Yonhap", r"Yonhap(?: News Agency)?", ("yonhap",), ("yna.co.kr",)),
    Agency("AAP", r"(?-i:AAP)|Australian Associated Press", ("aap",), ("aap.com.au",)),
    Agency("CP", r"The Canadian Press|(?-i:CP)", ("the canadian press", "canadian press"),
           ("thecanadianpress.com",)),
    Agency("UPI", r"UPI|United Press International", ("upi",), ("upi.com",)),
    Agency("SID", r"(?-i:SID)"),
    Agency("Bloomberg", r"Bloomberg(?: News)?", ("bloomberg",), ("bloomberg.com",)),
    Agency("TASS", r"(?-i:TASS)", ("tass",), ("tass.com",)),
)

# code -> name pattern, in table order
NAME_PATTERNS: dict[str, str] = {a.code: a.pattern for a in TABLE}
# casefolded author spelling -> code; the generic "agencies" words stand for no one agency ("")
AUTHOR_NAMES: dict[str, str] = {
    **{name: a.code for a in TABLE for name in a.authors},
    "agencies": "", "agenturen": "", "agences": "",
}
DOMAIN_CODES: dict[str, str] = {d: a.code for a in TABLE for d in a.domains}
DOMAINS: tuple[str, ...] = tuple(DOMAIN_CODES)


def code_for_domain(host: str) -> str | None:
    """The agency whose domain ``host`` is (or is a subdomain of), else None."""
    host = host.lower().rstrip(".")
    for dom, code in DOMAIN_CODES.items():
        if host == dom or host.endswith("." + dom):
            return code
    return None
