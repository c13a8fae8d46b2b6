"""The compact coders of the dedup stage (``copydesk.transforms.dedup.coders``): round trips,
determinism, and that Beam picks them (typed keys, no pickle) for the stage's PCollections."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.coders import BytesCoder, StrUtf8Coder, VarIntCoder, registry as coder_registry
from apache_beam.typehints import KV

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dedup_helpers import envelope, rec, story  # noqa: E402

from copydesk.transforms.dedup.stage import member_for  # noqa: E402
from copydesk.transforms.dedup.coders import (  # noqa: E402
    BatchCoder,
    DedupBatch,
    MemberCoder,
    decode_member,
    encode_member,
    member_ts_token,
)
from copydesk.transforms.dedup.core import DedupConfig, Member, member_from_entry  # noqa: E402


def members() -> list[Member]:
    cfg = DedupConfig()
    r = rec("a", "apnews.com", story(1), 0, 0)
    live = member_for(r, cfg)
    seed = member_from_entry({"id": "s1", "cluster_id": "c9", "canonical": "k7", "fp": "mh1:", "domain": "x.example",
                              "ts": 1_700_000_000.25, "agency": False, "content_hash": ""})
    return [
        live,
        live._replace(sig=b"", content_hash="", domain="", agency=False),
        seed,
        seed._replace(cluster_id="", canonical=""),  # empty strings are not None
        Member(token="tök:ü:1", id="https://ex.example/ünï/ç", stamp=-5, ts=-1.5, sig=bytes(range(256)),
               domain="例え.jp", agency=True, content_hash="h" * 64),
        seed._replace(stamp=10**25),  # a seed with a far-future event time: stamp beyond 64 bits
        seed._replace(stamp=-(10**25)),
    ]


@pytest.mark.parametrize("i", range(7))
def test_member_round_trip_exact(i: int) -> None:
    m = members()[i]
    got = MemberCoder().decode(MemberCoder().encode(m))
    assert got == m
    assert [type(x) for x in got] == [type(x) for x in m]


def test_member_encoding_is_deterministic_and_compact() -> None:
    m = members()[0]
    rebuilt = Member(*[pickle.loads(pickle.dumps(x)) for x in m])  # equal value, distinct objects
    assert encode_member(m) == encode_member(rebuilt)
    assert encode_member(m) != encode_member(m._replace(stamp=m.stamp + 1))
    assert encode_member(m) != encode_member(m._replace(agency=not m.agency))
    assert encode_member(m._replace(cluster_id=None)) != encode_member(m._replace(cluster_id=""))
    assert len(encode_member(m)) < len(pickle.dumps(m, protocol=pickle.HIGHEST_PROTOCOL))
    assert MemberCoder().is_deterministic()
    assert not BatchCoder().is_deterministic()  # the records inside are pickled


def test_member_ts_token_reads_the_header_only() -> None:
    for m in members():
        assert member_ts_token(encode_member(m)) == (m.ts, m.token)


def test_batch_round_trip() -> None:
    r = rec("a", "apnews.com", story(1), 0, 0)
    ms = members()
    blobs = [encode_member(m) for m in ms]
    c = BatchCoder()
    for items in ([], [(r, blobs[0])], [(r, b) for b in blobs]):
        got = c.decode(c.encode(items))
        assert got == items and [decode_member(b) for _, b in got] == ms[:len(items)]
    with pytest.raises(TypeError):
        c.encode([(r, ms[0])])  # a decoded member is a bug: members travel encoded
    with pytest.raises(Exception):
        c.decode(c.encode([(r, blobs[0])])[:-3])
    # nested (as in a KV), several in one stream
    impl = c.get_impl()
    from apache_beam.coders.coder_impl import create_InputStream, create_OutputStream
    out = create_OutputStream()
    msgs = [[(r, blobs[1])], [], [(r, blobs[2]), (r, blobs[0])]]
    for x in msgs:
        impl.encode_to_stream(x, out, True)
    inp = create_InputStream(out.get())
    assert [impl.decode_from_stream(inp, True) for _ in msgs] == msgs


def test_registry_gives_typed_keys_and_compact_values() -> None:
    k = coder_registry.get_coder(KV[int, DedupBatch])
    assert k.is_kv_coder() and k.key_coder() == VarIntCoder() and k.value_coder() == BatchCoder()


def test_stage_pcollections_use_the_coders() -> None:
    from copydesk.transforms.dedup.stage import Deduplicate, _Index

    p = beam.Pipeline()
    out, _ = p | beam.Create([envelope(rec("a", "apnews.com", story(1), 0, 0))]) | Deduplicate(DedupConfig())
    proto = p.to_runner_api()
    coders = proto.components.coders
    urns = set()
    for pc in proto.components.pcollections.values():
        c = coders[pc.coder_id]
        if c.spec.urn == "beam:coder:windowed_value:v1":
            c = coders[c.component_coder_ids[0]]
        if c.spec.urn == "beam:coder:kv:v1" and "Prepare" in pc.unique_name:
            urns.add(coders[c.component_coder_ids[0]].spec.urn)
    assert urns == {"beam:coder:varint:v1"}
    assert _Index.LOG.coder == BytesCoder() and _Index.VER.coder == StrUtf8Coder()


def test_decode_member_rejects_truncated_input() -> None:
    m = members()[0]
    b = encode_member(m)
    with pytest.raises(Exception):
        decode_member(b[:10])
    try:  # a truncated body never decodes to the same member silently
        got = decode_member(b[:-5])
    except Exception:
        return
    assert got != m
