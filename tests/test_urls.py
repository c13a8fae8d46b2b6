import pytest

from copydesk.transforms.extract.article import choose_canonical_url, content_hash
from copydesk.transforms.urls import InvalidURL, canonicalize, check_url, domain_of, record_id


def test_tracking_parameters_and_fragment_are_stripped():
    a = canonicalize("https://www.Example.com/news/a?utm_source=x&id=7&fbclid=zz&gclid=1#top")
    assert a == "https://www.example.com/news/a?id=7"


def test_same_story_same_id_whatever_the_tracking():
    urls = ["https://example.com/a?utm_medium=social", "https://EXAMPLE.com:443/a", "https://example.com/a#comments"]
    assert len({record_id(canonicalize(u)) for u in urls}) == 1
    assert record_id(canonicalize(urls[0])) != record_id(canonicalize("https://example.com/b"))


def test_rel_canonical_is_used_only_on_the_same_site():
    assert choose_canonical_url("https://m.example.com/a", "https://m.example.com/a",
                                "https://www.example.com/a") == "https://www.example.com/a"
    assert choose_canonical_url("https://blog.test/a", "https://blog.test/a",
                                "https://evil.test/else") == "https://blog.test/a"


@pytest.mark.parametrize("bad", ["", "   ", "mailto:x@y.z", "ftp://a/b", "http:///nohost", "a b"])
def test_check_url_refuses(bad):
    with pytest.raises(InvalidURL):
        check_url(bad)


def test_domain_and_content_hash():
    assert domain_of("https://www.news.example.org/x") == "news.example.org"
    assert content_hash("Hello,   world!\n") == content_hash("hello world")
    assert content_hash("hello world") != content_hash("hello there world")
