"""Generator of syndicated copies and hard negatives from real article bodies, as labelled pairs.

Source bodies: the fundus ground truth (``articleBody`` of
``/work/shared/eval/fundus/ground-truth.json``, found relative to the repository as
``<repo>/../shared/eval/fundus``, or ``$COPYDESK_SHARED/eval/fundus``). :func:`load_bodies`
returns ``[]`` when it is absent, so callers can skip cleanly. The bodies are split into
*stories* and a *pool*: the pool's sentences are the independent text (additions, other items,
new facts, templates), never a story's, so no negative is a copy of a story by accident (the
pool is recycled in a new order when used up).

:func:`generate` yields :class:`Variant` documents. Every non-original document names the
document it is paired with (``partner``) and whether the pair is the same story
(``positive``). The benchmark scores **each pair on its own** (the partner alone in the
index, then the document), so a pair is not helped by chaining through other copies.

Positive kinds (pair: the copy and the story's original, unless said otherwise)
    exact            verbatim copy by another outlet
    template         outlet boilerplate lines before and after the body
    light_edit       ~3% of the words replaced (house style)
    truncation       only the first 30-60% of the story (cut at a paragraph or sentence)
    tail_excerpt     only the last 30-60%
    middle_excerpt   a middle window of 30-50%
    long_addition    the whole story plus ~200-320 words of the outlet's own text at the end
    sidebar_lead     another story's text (a sidebar, 60-150 words) leading the body:
                     extraction noise
    foreign_nav      the copy (70-100% of it) inside navigation text in another language
    writethru        the agency's later version on the same site: new lead, paragraphs
                     reordered, a new fact paragraph, 10-30% of the sentences reworded
    writethru_short  the agency's short first item (its first 25-40%, alone) and
                     the later full story reworded (pair: the writethru and the short item)
Negative kinds (must not match the paired document)
    roundup          same site as the story: the story verbatim as the first ~3/4, then two
                     short items from two other stories (paired with the story and with
                     the other stories' originals: a chain through it would join them)
    weekly_list      same site: a list of six stories in one language, each its title and
                     its opening sentences (at least 15 words, at most 3 sentences: a teaser),
                     in a random order (paired with each of them)
    template_post    two posts of one site sharing text (paired with each other): for half
                     the stories a template (40-65% of each post; fixed wording whose names
                     are generic, as in automated posts) around each post's own specifics,
                     for the other half one or two shared background paragraphs (15-35%,
                     names and all) in two otherwise different stories
    same_event       an independent report of the story's event by another outlet: the
                     story's named entities and one quote in independent text, the lead
                     fact reworded

Everything is seeded and deterministic.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# ../shared beside the project; COPYDESK_SHARED overrides it (a git worktree elsewhere)
_SHARED = Path(os.environ.get("COPYDESK_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
FUNDUS_DIR = _SHARED / "eval" / "fundus"

POSITIVE_KINDS = (
    "exact",
    "template",
    "light_edit",
    "truncation",
    "tail_excerpt",
    "middle_excerpt",
    "long_addition",
    "sidebar_lead",
    "foreign_nav",
    "writethru",
    "writethru_short",
)
VERSION_KINDS = ("writethru", "writethru_short")
NEGATIVE_KINDS = ("roundup", "weekly_list", "template_post", "same_event")

AGENCY = "apnews.com"
OUTLETS = [f"outlet{i:02d}.example" for i in range(40)]

_TEMPLATES = [
    (
        ["Advertisement", "Sign up for our morning newsletter and never miss a story."],
        ["Copyright 2024 The Associated Press. All rights reserved. This material may not be published, broadcast, rewritten or redistributed.", "Read more: Top stories of the day"],
    ),
    (
        ["Listen to this article", "Share this story on Facebook, X and WhatsApp"],
        ["Have a news tip? Contact our newsroom 24 hours a day.", "Related coverage", "Follow us for updates"],
    ),
    (
        ["Breaking"],
        ["This article was automatically imported from a wire agency feed and has not been edited by our staff.", "Comments are closed."],
    ),
]

_FILLER = (
    "council residents officials local community county mayor said week plans school road "
    "district region council meeting budget families business owners reported morning "
    "statement spokesperson confirmed earlier area hospital police department weather "
    "services public transport project funding state department office announced Tuesday"
).split()

_STOP = {
    "en": {"the", "and", "of", "to", "in", "is", "that", "for", "was", "with"},
    "de": {"der", "die", "und", "das", "den", "nicht", "ist", "mit", "von", "auf"},
    "es": {"el", "la", "de", "que", "los", "las", "en", "por", "una", "del"},
    "fr": {"le", "la", "les", "des", "et", "est", "une", "dans", "pour", "qui"},
}


@dataclass(frozen=True, slots=True)
class Variant:
    """One generated document and the pair it belongs to."""

    doc_id: str
    story: str  # ground-truth story id (negatives get their own story id)
    kind: str  # "original", a positive kind or a negative kind
    domain: str
    title: str
    text: str
    source_story: str  # the story it was derived from (== story for positives)
    offset_s: float  # publication offset from the story's start, seconds
    partner: str = ""  # doc_id of the document it is paired with ("" for originals)
    positive: bool = False  # the pair is the same story
    extra_partners: tuple[str, ...] = ()  # more negative partners (roundups, weekly lists)


def load_bodies(path: Path | None = None) -> list[tuple[str, str, str]]:
    """``(key, title, body)`` of the fundus ground truth, or ``[]`` when the file is absent."""
    p = (path or FUNDUS_DIR) / "ground-truth.json"
    if not p.exists():
        return []
    data = json.loads(p.read_text(encoding="utf-8"))
    out = []
    for key in sorted(data):
        body = data[key].get("articleBody") or ""
        if len(body.split()) >= 80:
            out.append((key, data[key].get("title") or key, body))
    return out


def language(text: str) -> str:
    """A crude language guess from stop words (``"en"``, ``"de"``, ``"es"``, ``"fr"`` or ``"xx"``)."""
    words = re.findall(r"\w+", text.lower())[:400]
    best, score = "xx", 0
    for lang, sw in _STOP.items():
        s = sum(w in sw for w in words)
        if s > score:
            best, score = lang, s
    return best if score >= 8 else "xx"


def _paras(body: str) -> list[str]:
    ps = [p.strip() for p in re.split(r"\n\s*\n|\n", body) if p.strip()]
    return ps or [body]


def _sentences(p: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", p) if s]


def _filler(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_FILLER) for _ in range(n)).capitalize() + "."


def _light_edit(rng: random.Random, body: str, rate: float = 0.03) -> str:
    words = body.split(" ")
    for i in range(len(words)):
        if rng.random() < rate:
            words[i] = rng.choice(_FILLER)
    return " ".join(words)


def _caps(text: str) -> list[str]:
    """Capitalised words not at a sentence start (names, places; all nouns in German)."""
    out = []
    for s in _sentences(text.replace("\n", " ")):
        ws = s.split()
        out += [w.strip(".,;:!?\"'()“”„«»") for w in ws[1:] if w[:1].isupper()]
    return [w for w in out if len(w) > 1]


def _generic(s: str) -> str:
    """A sentence with its names made generic (template wording: capitalised words inside the
    sentence lower-cased)."""
    ws = s.split()
    return " ".join(ws[:1] + [w.lower() if w[:1].isupper() else w for w in ws[1:]])


def _reword(rng: random.Random, s: str) -> str:
    """A sentence said differently: clauses rotated, words dropped, neighbours swapped."""
    clauses = [c for c in s.rstrip(".!?").split(", ") if c]
    if len(clauses) > 1:
        k = rng.randrange(1, len(clauses))
        clauses = clauses[k:] + clauses[:k]
    ws = " ".join(clauses).split()
    out: list[str] = []
    i = 0
    while i < len(ws):
        r = rng.random()
        if r < 0.12:
            i += 1  # dropped
            continue
        if r < 0.30 and i + 1 < len(ws):
            out += [ws[i + 1], ws[i]]
            i += 2
            continue
        if r < 0.40:
            out.append(rng.choice(_FILLER))
        out.append(ws[i])
        i += 1
    return " ".join(out) + "."


def _cut_words(ps: list[str], start: float, end: float) -> list[str]:
    """The paragraphs (and part-paragraphs, cut at sentences) covering the ``start``-``end``
    share of the words."""
    sents = [(i, s) for i, p in enumerate(ps) for s in _sentences(p)]
    total = sum(len(s.split()) for _, s in sents)
    lo, hi = start * total, end * total
    acc = 0
    keep: dict[int, list[str]] = {}
    for i, s in sents:
        n = len(s.split())
        mid = acc + n / 2
        acc += n
        if lo <= mid <= hi:
            keep.setdefault(i, []).append(s)
    return [" ".join(v) for _, v in sorted(keep.items())] or ps[:1]


class _Pool:
    """Sentences of the held-out bodies by language, each handed out once."""

    def __init__(self, bodies: list[tuple[str, str, str]], rng: random.Random) -> None:
        self.rng = rng
        self.all: dict[str, list[str]] = {}
        for _, _, b in bodies:
            lang = language(b)
            self.all.setdefault(lang, []).extend(
                s for p in _paras(b) for s in _sentences(p) if len(s.split()) >= 5)
        self.by_lang: dict[str, list[str]] = {}
        for k in self.all:
            self._refill(k)

    def _refill(self, lang: str) -> None:
        # the pool is recycled in a new order when used up: sentences repeat across stories,
        # never within one call (a pair's two documents draw in separate calls, so two
        # negatives of a pair can share a recycled sentence only by a rare coincidence)
        v = list(self.all[lang])
        self.rng.shuffle(v)
        self.by_lang[lang] = v

    def words(self, n_words: int, lang: str, other: bool = False) -> list[str] | None:
        """Sentences worth ``n_words`` words in ``lang`` (or, with ``other``, in another
        language); falls back to any language."""
        langs = sorted((k for k in self.all if (k != lang) == other), key=lambda k: -len(self.all[k]))
        langs = langs or sorted(self.all, key=lambda k: -len(self.all[k]))
        if not langs:
            return None
        if sum(len(s.split()) for s in self.by_lang[langs[0]]) < n_words:
            self._refill(langs[0])
        src = self.by_lang[langs[0]]
        out, got = [], 0
        while src and got < n_words:
            s = src.pop()
            out.append(s)
            got += len(s.split())
        return out if got >= n_words * 0.8 else None


def _inject(rng: random.Random, sents: list[str], names: list[str], rate: float = 0.5) -> list[str]:
    """Replace capitalised words of ``sents`` with the story's names (a report on the same
    people and places)."""
    if not names:
        return sents
    out = []
    for s in sents:
        ws = s.split()
        for i in range(1, len(ws)):
            if ws[i][:1].isupper() and rng.random() < rate:
                ws[i] = rng.choice(names)
        out.append(" ".join(ws))
    return out


def _teaser(ps: list[str], min_words: int = 15, max_sentences: int = 3) -> str:
    """A list's teaser of a story: its opening sentences, until ``min_words`` words (at most
    ``max_sentences``; a dateline alone, "Berlin.", is no teaser)."""
    out: list[str] = []
    for s in _sentences(ps[0]) or [ps[0]]:
        out.append(s)
        if len(" ".join(out).split()) >= min_words or len(out) >= max_sentences:
            break
    return " ".join(out)


def _quote(ps: list[str]) -> str | None:
    for p in ps:
        m = re.search(r"[\"“„«]([^\"“”„«»]{30,300})[\"”“»]", p)
        if m:
            return m.group(0)
    return None


def generate(bodies: list[tuple[str, str, str]], seed: int = 7, held_out: float = 0.3) -> Iterator[Variant]:
    """Originals, positive copies and negatives with their pairs (see the module docstring).

    The last ``held_out`` share of ``bodies`` is the pool of independent text.
    """
    rng = random.Random(seed)
    n_pool = int(len(bodies) * held_out) if len(bodies) >= 4 else 0
    stories, pool_bodies = bodies[: len(bodies) - n_pool], bodies[len(bodies) - n_pool:]
    pool = _Pool(pool_bodies, rng)
    sids = [f"s{si:04d}" for si in range(len(stories))]
    para_of = {sid: _paras(b) for sid, (_k, _t, b) in zip(sids, stories)}
    title_of = {sid: t for sid, (_k, t, _b) in zip(sids, stories)}
    lang_of = {sid: language(b) for sid, (_k, _t, b) in zip(sids, stories)}

    for si, (_key, title, body) in enumerate(stories):
        story = sids[si]
        ps = para_of[story]
        lang = language(body)
        names = sorted(set(_caps(body)))
        orig = f"{story}-orig"
        outlets = rng.sample(OUTLETS, k=len(POSITIVE_KINDS) + 4)
        yield Variant(orig, story, "original", AGENCY, title, body, story, 0.0)

        def pos(kind: str, text: str, dom: str, partner: str = orig, t: str = title) -> Variant:
            return Variant(f"{story}-{kind}", story, kind, dom, t, text, story, rng.uniform(60, 6 * 3600),
                           partner, True)

        for oi, kind in enumerate(POSITIVE_KINDS):
            dom = outlets[oi]
            pre, post = _TEMPLATES[rng.randrange(len(_TEMPLATES))]
            if kind == "exact":
                yield pos(kind, body, dom)
            elif kind == "template":
                yield pos(kind, "\n".join(pre + ps + post), dom)
            elif kind == "light_edit":
                yield pos(kind, _light_edit(rng, "\n".join(ps)), dom)
            elif kind == "truncation":
                f = rng.uniform(0.30, 0.60)
                yield pos(kind, "\n".join(pre + _cut_words(ps, 0.0, f) + post[:1]), dom)
            elif kind == "tail_excerpt":
                f = rng.uniform(0.30, 0.60)
                yield pos(kind, "\n".join(_cut_words(ps, 1.0 - f, 1.0) + post), dom)
            elif kind == "middle_excerpt":
                f = rng.uniform(0.30, 0.50)
                a = rng.uniform(0.15, 1.0 - f - 0.1)
                yield pos(kind, "\n".join(_cut_words(ps, a, a + f)), dom)
            elif kind == "long_addition":
                add = pool.words(rng.randint(200, 320), lang)
                if add:
                    add = _inject(rng, add, names, 0.3)
                    yield pos(kind, "\n".join(ps + [" ".join(add[i:i + 3]) for i in range(0, len(add), 3)]), dom)
            elif kind == "sidebar_lead":
                side = pool.words(rng.randint(60, 150), lang)
                if side:
                    yield pos(kind, "\n".join([" ".join(side)] + ps), dom)
            elif kind == "foreign_nav":
                nav_a = pool.words(rng.randint(80, 200), lang, other=True)
                nav_b = pool.words(rng.randint(40, 150), lang, other=True)
                if nav_a and nav_b:
                    f = rng.uniform(0.7, 1.0)
                    a = rng.uniform(0.0, 1.0 - f)
                    nav = [" | ".join(s.split(" ")[:6]) for s in nav_a]  # menu-like lines
                    yield pos(kind, "\n".join(nav + _cut_words(ps, a, a + f) + nav_b), dom)
            elif kind == "writethru":
                wt = _writethru(rng, ps, pool, lang, names)
                if wt:
                    yield pos(kind, wt, AGENCY)
            elif kind == "writethru_short":
                short = _cut_words(ps, 0.0, rng.uniform(0.25, 0.40))  # the first item: 2-4 paragraphs
                short_id = f"{story}-short"
                yield Variant(short_id, story, "short_item", AGENCY, title, "\n".join(short), story,
                              rng.uniform(-3600, -600))
                wt = _writethru(rng, ps, pool, lang, names)
                if wt:
                    yield pos(kind, wt, AGENCY, partner=short_id)

        # --- negatives
        others = [s for s in rng.sample(sids, k=min(len(sids), 8)) if s != story]
        # roundup on the story's own site: the story verbatim as ~3/4, then two items on
        # other stories (their leads, each ~1/6 of the story's length, topped up from the pool)
        body_words = len(body.split())
        items = []
        for o in others[:2]:
            want = max(40, body_words // 6)
            item = " ".join(" ".join(para_of[o]).split()[:want])
            short = want - len(item.split())
            if short > 10:
                extra = pool.words(short, lang)
                item += " " + " ".join(extra or [])
            items.append(item)
        text = "\n".join(ps + items)
        yield Variant(f"{story}-roundup", f"{story}-n1", "roundup", AGENCY, "Roundup", text, story,
                      rng.uniform(3600, 7200), orig, False, tuple(f"{o}-orig" for o in others[:2]))
        # weekly list: six of the site's stories in one language (the story and five others,
        # in a random order), each its title and its opening as a teaser. Drawn with a random
        # generator of its own, so the other kinds do not depend on how lists are made
        lrng = random.Random(f"{seed}-weekly-{si}")
        same_lang = [o for o in sids if o != story and lang_of[o] == lang]
        rest = [o for o in sids if o != story and lang_of[o] != lang]
        listed = [story] + lrng.sample(same_lang, k=min(5, len(same_lang)))
        listed += lrng.sample(rest, k=6 - len(listed))
        lrng.shuffle(listed)
        lines = ["This week's most read stories"]
        for o in listed:
            lines += [title_of[o], _teaser(para_of[o])]
        lines.append("Sign up to get the weekly list in your inbox.")
        yield Variant(f"{story}-weekly_list", f"{story}-n2", "weekly_list", AGENCY, "Weekly", "\n".join(lines), story,
                      rng.uniform(7200, 20000), orig, False, tuple(f"{o}-orig" for o in listed if o != story))
        # template posts: two posts of one site sharing text. Every other story: a template
        # (40-65% of each post: fixed wording, its names made generic as in an automated post,
        # the site's name kept) around each post's own specifics; otherwise two stories that
        # share one or two background paragraphs (names and all, 15-35% of each)
        site = f"site{si % 23:02d}.example"
        if si % 2 == 0:
            tpl = pool.words(rng.randint(80, 160), lang)
            own_a, own_b = pool.words(rng.randint(60, 140), lang), pool.words(rng.randint(60, 140), lang)
            if tpl and own_a and own_b:
                tpl = [_generic(s) + (" (Site Desk)" if i == 0 else "") for i, s in enumerate(tpl)]
        else:
            tpl = pool.words(rng.randint(50, 110), lang)
            own_a, own_b = pool.words(rng.randint(200, 320), lang), pool.words(rng.randint(200, 320), lang)
        if tpl and own_a and own_b:
            ta = [" ".join(tpl[i:i + 3]) for i in range(0, len(tpl), 3)]
            k = rng.randrange(len(ta) + 1)
            post_a = "\n".join(ta[:k] + [" ".join(own_a)] + ta[k:])
            post_b = "\n".join(ta[:k] + [" ".join(own_b)] + ta[k:])
            a_id = f"{story}-template_a"
            yield Variant(a_id, f"{story}-n3a", "template_post_a", site, "Post", post_a, story, rng.uniform(0, 3600))
            yield Variant(f"{story}-template_post", f"{story}-n3b", "template_post", site, "Post", post_b, story,
                          rng.uniform(3600, 7200), a_id, False)
        # independent report of the same event
        ev = _same_event(rng, ps, pool, lang, names)
        if ev:
            yield Variant(f"{story}-same_event", f"{story}-n4", "same_event", rng.choice(OUTLETS), title, ev, story,
                          rng.uniform(60, 3600), orig, False)


def _writethru(rng: random.Random, ps: list[str], pool: _Pool, lang: str, names: list[str]) -> str | None:
    """A later version of the story: new lead, paragraphs reordered, a new fact, 10-30% of the
    sentences reworded."""
    lead = pool.words(rng.randint(25, 50), lang)
    fact = pool.words(rng.randint(30, 70), lang)
    if not lead or not fact:
        return None
    body = [list(_sentences(p)) for p in ps]
    rate = rng.uniform(0.10, 0.30)
    body = [[_reword(rng, s) if rng.random() < rate else s for s in p] for p in body]
    paras = [" ".join(p) for p in body if p]
    for _ in range(rng.randint(1, 3)):  # move a paragraph
        if len(paras) > 2:
            p = paras.pop(rng.randrange(1, len(paras)))
            paras.insert(rng.randrange(1, len(paras) + 1), p)
    paras.insert(rng.randint(1, max(1, len(paras) // 2)), " ".join(_inject(rng, fact, names)))
    paras[0] = " ".join(_inject(rng, lead, names)) + " " + _reword(rng, (_sentences(paras[0]) or [paras[0]])[0])
    return "\n".join(paras)


def _same_event(rng: random.Random, ps: list[str], pool: _Pool, lang: str, names: list[str]) -> str | None:
    """An independent report: the lead fact reworded, the story's names and one quote in
    independent text of about the story's length."""
    n = min(700, max(120, len(" ".join(ps).split())))
    own = pool.words(n, lang)
    if not own:
        return None
    own = _inject(rng, own, names, 0.6)
    lead = _reword(rng, (_sentences(ps[0]) or [ps[0]])[0])
    parts = [lead] + [" ".join(own[i:i + 4]) for i in range(0, len(own), 4)]
    q = _quote(ps)
    if q:
        parts.insert(min(2, len(parts)), f"{rng.choice(names) if names else 'He'} said: {q}")
    return "\n".join(parts)


def pairs(vs: list[Variant]) -> list[tuple[str, str, str, bool]]:
    """``(kind, partner id, doc id, positive)`` of every labelled pair."""
    out = []
    for v in vs:
        if v.partner:
            out.append((v.kind, v.partner, v.doc_id, v.positive))
        for p in v.extra_partners:
            out.append((v.kind, p, v.doc_id, False))
    return out


if __name__ == "__main__":  # pragma: no cover - manual inspection
    bs = load_bodies()
    if not bs:
        raise SystemExit(f"fundus ground truth not found under {FUNDUS_DIR}")
    for v in generate(bs[:3] + bs[-60:]):
        if v.story.startswith("s0000"):
            print(f"--- {v.doc_id} [{v.kind}] {v.domain} pair={v.partner}\n{v.text[:400]}\n")
