import jsonschema
import pytest

from copydesk.schemas.codec import (article_schema, dead_letter, decode, encode, encode_doc, validate_article,
                                    validate_dead_letter)
from copydesk.schemas.reasons import Reason, Stage
from copydesk.schemas.records import ArticleRecord, FetchedPage, InputMessage, SourceRef
from copydesk.transforms.extract.article import build_article
from copydesk.transforms.extract.core import Extracted


def _article() -> ArticleRecord:
    msg = InputMessage(url="https://news.example/story?utm_source=x", ref=SourceRef("urls", 0, 9))
    page = FetchedPage(message=msg, final_url="https://news.example/story", html="<html/>",
                       fetched_at="2025-01-01T00:00:00.000Z")
    return build_article(page, Extracted(text="Body text.", title="T", authors=["A B"]))


def test_built_article_validates_and_round_trips():
    rec = _article()
    doc = decode(encode(rec))
    validate_article(doc)
    assert doc["id"] == rec.id and doc["topic"] == "urls" and doc["offset"] == 9
    assert "ref" not in doc  # internal, never written
    assert doc["canonical_url"] == "https://news.example/story"
    assert doc["schema_version"] == 1


def test_schema_rejects_a_bad_record():
    doc = decode(encode(_article()))
    for broken in ({**doc, "text": ""}, {**doc, "id": "x"}, {**doc, "extra": 1},
                   {k: v for k, v in doc.items() if k != "url"}):
        with pytest.raises(jsonschema.ValidationError):
            validate_article(broken)


def test_every_reason_code_is_in_the_dead_letter_schema():
    for reason in Reason:
        validate_dead_letter(decode(encode(dead_letter(Stage.FETCH, reason, "m", ref=SourceRef("t", 0, 1)))))
    with pytest.raises(jsonschema.ValidationError):
        validate_dead_letter({**decode(encode(dead_letter(Stage.FETCH, Reason.DNS, "m"))), "reason": "made_up"})


def test_schema_lists_the_dataclass_fields():
    props = set(article_schema()["properties"])
    fields = set(ArticleRecord.__dataclass_fields__) - {"ref", "force"}  # internal, never written
    assert props == fields


def test_records_hold_only_what_is_written_and_to_dict_is_their_document():
    import dataclasses

    from copydesk.schemas.records import DeadLetter, Envelope, WireInfo

    rec = dataclasses.replace(_article(), wire=WireInfo(agencies=["AP"], attribution="By AP", dateline="X (AP) —"),
                              tags=["a"], cluster_outlets=["news.example"])
    dead = dead_letter(Stage.FETCH, Reason.DNS, "m", ref=SourceRef("urls", 1, 7, covers_from=5, origin=0),
                       raw="x", detail={"status": None, "redirects": ["https://a.example/"]})
    for r in (rec, dead):
        names = {f.name for f in dataclasses.fields(r)}
        assert not names & {"ref", "force", "covers_from", "origin"}  # transport travels in an Envelope
        assert r.to_dict() == dataclasses.asdict(r)  # the cheap form is the deep copy's document
        assert encode(r) == encode_doc(dataclasses.asdict(r))
    assert (dead.topic, dead.partition, dead.offset) == ("urls", 1, 7)  # the written source fields stay
    assert rec.to_dict()["wire"] == {"agencies": ["AP"], "attribution": "By AP", "dateline": "X (AP) —"}
    env = Envelope(dead, SourceRef("urls", 1, 7, covers_from=5, origin=0))
    assert env.ref.covers_from == 5 and env.record is dead


def _broken_articles(doc: dict) -> list[dict]:
    return [{**doc, "text": ""}, {**doc, "id": "x"}, {**doc, "id": doc["id"].upper()}, {**doc, "extra": 1},
            {k: v for k, v in doc.items() if k != "url"}, {**doc, "offset": "9"}, {**doc, "offset": True},
            {**doc, "authors": "A B"}, {**doc, "authors": [1]}, {**doc, "wire": {**doc["wire"], "agencies": None}},
            {**doc, "schema_version": 2}, {**doc, "is_canonical": 1}, {**doc, "language": 5}]


def test_the_fast_validator_and_the_reference_agree():
    # validate_* take a record the fast (Rust) validator accepts as valid and leave every other
    # to the reference validator: the fast one must never accept what the reference refuses
    from copydesk.schemas.codec import _fast_validator, _validator

    fast, ref = _fast_validator("article.schema.json"), _validator("article.schema.json")
    assert fast is not None, "jsonschema_rs is a dependency (pyproject)"
    doc = decode(encode(_article()))
    assert fast.is_valid(doc) and ref.is_valid(doc)
    for broken in _broken_articles(doc):
        assert not ref.is_valid(broken), broken
        assert not fast.is_valid(broken), broken
        with pytest.raises(jsonschema.ValidationError):
            validate_article(broken)
    letter = decode(encode(dead_letter(Stage.PARSE, Reason.MALFORMED, "m", ref=SourceRef("t", 0, 1), raw=b"x")))
    fast_dl, ref_dl = _fast_validator("deadletter.schema.json"), _validator("deadletter.schema.json")
    for d in (letter, {**letter, "reason": "made_up"}, {**letter, "attempts": -1}, {**letter, "stage": None},
              {**letter, "detail": []}, {k: v for k, v in letter.items() if k != "reason"}):
        assert fast_dl.is_valid(d) == ref_dl.is_valid(d), d


def test_a_value_the_fast_validator_cannot_take_is_left_to_the_reference():
    # a lone surrogate is valid to the schema (a Python str), not to orjson: it fails later, at
    # encoding, and becomes a dead letter there (transforms/encode.py), not here
    doc = {**decode(encode(_article())), "title": "\ud800"}
    validate_article(doc)
    with pytest.raises(jsonschema.ValidationError):
        validate_article({**doc, "id": "x"})
