"""Generator of syndicated variants (and hard negatives) from real article bodies.

Source bodies: the fundus ground truth (``articleBody`` of
``/work/shared/eval/fundus/ground-truth.json``, found relative to the repository as
``<repo>/../shared/eval/fundus``). :func:`load_bodies` returns ``[]`` when it is absent, so
callers can skip cleanly.

For every base article (a "story") :func:`generate` yields the agency original and copies by
other outlets; the variant ``kind`` says what was done to the body:

positives (same story, must cluster with the original)
    exact          verbatim copy by another outlet
    template       outlet boilerplate lines before and after the body
    trimmed        last one or two paragraphs cut
    local_intro    a paragraph of local context prepended
    editors_note   an editor's note line prepended
    headline       new headline (title only), template wrapper
    light_edit     ~3% of the words replaced (house style), a paragraph break moved
    update         same outlet as the original, later: a paragraph added, a sentence changed
    combo          template + trimmed + local intro
negatives (new stories; must NOT cluster with the story they borrow from)
    same_event     an independent report: the original's first sentence, another article's body
    roundup        one paragraph of the original quoted inside three other articles' paragraphs
    teaser         a short same-site teaser: site boilerplate + the first 25 words of the story
                   (teasers of different stories share the boilerplate)

Everything is seeded and deterministic.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

FUNDUS_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "eval" / "fundus"

POSITIVE_KINDS = (
    "exact",
    "template",
    "trimmed",
    "local_intro",
    "editors_note",
    "headline",
    "light_edit",
    "update",
    "combo",
)
NEGATIVE_KINDS = ("same_event", "roundup", "teaser")

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

_SITE_BOILER = (
    "Subscribe now for unlimited access to award winning journalism. Download our app for "
    "the latest headlines, live blogs and push alerts. Read the full story in our daily edition."
)


@dataclass(frozen=True, slots=True)
class Variant:
    """One generated document."""

    doc_id: str
    story: str  # ground-truth story id (negatives get their own story id)
    kind: str  # "original", a positive kind or a negative kind
    domain: str
    title: str
    text: str
    source_story: str  # the story it was derived from (== story for positives)
    offset_s: float  # publication offset from the story's start, seconds


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


def _paras(body: str) -> list[str]:
    ps = [p.strip() for p in re.split(r"\n\s*\n|\n", body) if p.strip()]
    return ps or [body]


def _filler(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_FILLER) for _ in range(n)).capitalize() + "."


def _light_edit(rng: random.Random, body: str, rate: float = 0.03) -> str:
    words = body.split(" ")
    for i in range(len(words)):
        if rng.random() < rate:
            words[i] = rng.choice(_FILLER)
    return " ".join(words)


def _sentences(p: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", p) if s]


def generate(
    bodies: list[tuple[str, str, str]], seed: int = 7, copies_per_kind: int = 1, held_out: float = 0.3
) -> Iterator[Variant]:
    """All originals, positive variants and negatives.

    The last ``held_out`` share of ``bodies`` is not used as stories: its sentences, shuffled
    and each used once, are the independent text of the negatives (so a negative is not a
    copy of any story nor of another negative).
    """
    rng = random.Random(seed)
    n_pool = int(len(bodies) * held_out) if len(bodies) >= 4 else 0
    stories, pool_bodies = bodies[: len(bodies) - n_pool], bodies[len(bodies) - n_pool :]
    pool = [s for _, _, b in pool_bodies for p in _paras(b) for s in _sentences(p) if len(s.split()) >= 5]
    rng.shuffle(pool)

    def take(k: int) -> list[str] | None:
        if len(pool) < k:
            return None
        out = pool[-k:]
        del pool[-k:]
        return out

    for si, (_key, title, body) in enumerate(stories):
        story = f"s{si:04d}"
        ps = _paras(body)
        outlets = rng.sample(OUTLETS, k=min(len(OUTLETS), len(POSITIVE_KINDS) * copies_per_kind + 3))
        yield Variant(f"{story}-orig", story, "original", AGENCY, title, body, story, 0.0)
        oi = 0
        for c in range(copies_per_kind):
            for kind in POSITIVE_KINDS:
                pre, post = _TEMPLATES[rng.randrange(len(_TEMPLATES))]
                t = title
                dom = outlets[oi % len(outlets)]
                oi += 1
                if kind == "exact":
                    text = body
                elif kind == "template":
                    text = "\n".join(pre + ps + post)
                elif kind == "trimmed":
                    cut = 1 if len(ps) < 6 else 2
                    text = "\n".join(ps[:-cut] if len(ps) > 2 else ps)
                elif kind == "local_intro":
                    text = "\n".join([_filler(rng, 35)] + ps)
                elif kind == "editors_note":
                    text = "\n".join(["Editor's note: This story contains details some readers may find distressing."] + ps)
                elif kind == "headline":
                    t = "UPDATE: " + title[::-1][:40]
                    text = "\n".join(pre + ps + post)
                elif kind == "light_edit":
                    text = _light_edit(rng, "\n".join(ps))
                elif kind == "update":
                    dom = AGENCY
                    new_ps = list(ps)
                    j = rng.randrange(len(new_ps))
                    sents = _sentences(new_ps[j])
                    if sents:
                        k = rng.randrange(len(sents))
                        sents[k] = _filler(rng, 12)
                        new_ps[j] = " ".join(sents)
                    new_ps.insert(min(len(new_ps), 2), _filler(rng, 45))
                    text = "\n".join(new_ps)
                else:  # combo
                    cut = 1 if len(ps) > 3 else 0
                    text = "\n".join(pre + [_filler(rng, 30)] + (ps[:-cut] if cut else ps) + post)
                yield Variant(f"{story}-{kind}-{c}", story, kind, dom, t, text, story, rng.uniform(60, 6 * 3600))
        # negatives derived from this story
        first = (_sentences(ps[0]) or [ps[0]])[0]
        ev = take(20)
        if ev is not None:  # independent report: same lead sentence, own body
            text = first + "\n" + "\n".join(" ".join(ev[i : i + 4]) for i in range(0, 20, 4))
            yield Variant(f"{story}-same_event", f"{story}-n1", "same_event", rng.choice(OUTLETS), title, text, story, rng.uniform(60, 3600))
        rd = take(16)
        if rd is not None:  # roundup quoting one paragraph of the wire item
            quote = ps[min(1, len(ps) - 1)]
            parts = [" ".join(rd[i : i + 4]) for i in range(0, 16, 4)]
            parts.insert(2, quote)
            yield Variant(f"{story}-roundup", f"{story}-n2", "roundup", rng.choice(OUTLETS), "Roundup", "\n".join(parts), story, rng.uniform(3600, 7200))
        words = body.split()[:25]
        teaser = _SITE_BOILER + "\n" + " ".join(words) + " ...\n" + _SITE_BOILER
        yield Variant(f"{story}-teaser", f"{story}-n3", "teaser", "teasers.example", title, teaser, story, rng.uniform(60, 600))


if __name__ == "__main__":  # pragma: no cover - manual inspection
    bs = load_bodies()
    if not bs:
        raise SystemExit(f"fundus ground truth not found under {FUNDUS_DIR}")
    vs = list(generate(bs[:2]))
    for v in vs:
        print(f"--- {v.doc_id} [{v.kind}] {v.domain}\n{v.text[:300]}\n")
