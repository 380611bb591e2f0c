"""Outcome records: validation, immutability, equality, and the binary and dict forms."""

import copy
import json
import math
import pickle
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sona
import sona.state
from sona import Outcome, OutcomeError
from sona.outcome import MAX_DECISION_ID_CHARS, MAX_ROUTE_BYTES, OUTCOME_FORMAT_VERSION


def emb(d=8, seed=0):
    return np.random.default_rng(seed).standard_normal(d).astype(np.float32)


def full(d=8, **kw):
    args = dict(cost=0.0125, latency_ms=830.5, decision_id="r0-42", timestamp=1.75e9)
    args.update(kw)
    return Outcome(emb(d), "gpt-4o", 0.35, 0.9, **args)


def minimal(d=8):
    return Outcome(emb(d), "small", 1.0, 0.0)


def with_crc(body: bytes) -> bytes:
    """A record whose checksum is valid for the (tampered) body, to reach the field checks."""
    return body + struct.pack("<I", zlib.crc32(body))


# --------------------------------------------------------------------------- construction


def test_fields_are_stored_normalised():
    x = [1, 2, 3]  # ints are fine: stored as float32
    o = Outcome(x, "a", np.float64(0.5), 1, cost=np.float32(0.25), latency_ms=3,
                decision_id="id", timestamp=-5.0)
    assert o.embedding.dtype == np.float32 and o.embedding.tolist() == [1.0, 2.0, 3.0]
    assert o.dim == 3
    assert (o.route, o.prob, o.quality, o.cost, o.latency_ms, o.decision_id, o.timestamp) == (
        "a", 0.5, 1.0, 0.25, 3.0, "id", -5.0)
    assert all(type(v) is float for v in (o.prob, o.quality, o.cost, o.latency_ms, o.timestamp))
    m = minimal()
    assert (m.cost, m.latency_ms, m.decision_id, m.timestamp) == (None, None, None, None)


def test_embedding_is_a_read_only_private_copy():
    x = emb()
    o = Outcome(x, "a", 0.5, 0.5)
    x[0] = 123.0
    assert o.embedding[0] != 123.0
    assert not o.embedding.flags.writeable
    with pytest.raises(ValueError):
        o.embedding[0] = 1.0
    big = emb(16)[::2]  # non-contiguous views are copied too
    assert Outcome(big, "a", 0.5, 0.5).embedding.flags.c_contiguous


def test_immutable():
    o = full()
    for name in ("embedding", "route", "prob", "quality", "cost", "decision_id", "new"):
        with pytest.raises(AttributeError):
            setattr(o, name, None)
    with pytest.raises(AttributeError):
        del o.route
    with pytest.raises(AttributeError):
        object.__setattr__(o, "__dict__", {})  # no instance dict to smuggle fields into


def test_equality_and_hash_by_value():
    a, b = full(), full()
    assert a == b and hash(a) == hash(b) and a is not b
    assert len({a, b}) == 1
    assert a != Outcome(a.embedding, a.route, a.prob, 0.8, a.cost, a.latency_ms, a.decision_id,
                        a.timestamp)
    assert a != full(cost=None)
    assert a != full(decision_id="r0-43")
    other = a.embedding.copy()
    other[3] = np.nextafter(other[3], np.float32(np.inf))
    assert a != Outcome(other, a.route, a.prob, a.quality, a.cost, a.latency_ms, a.decision_id,
                        a.timestamp)
    assert a != "not an outcome" and (a == 1) is False


def test_repr_is_short_and_names_the_fields():
    r = repr(full(d=4096))
    assert r.startswith("Outcome(route='gpt-4o', prob=0.35, quality=0.9, dim=4096")
    assert "cost=0.0125" in r and "decision_id='r0-42'" in r and len(r) < 200
    assert "cost" not in repr(minimal())


def test_pickle_and_copy_keep_the_value():
    o = full()
    for p in range(pickle.HIGHEST_PROTOCOL + 1):
        got = pickle.loads(pickle.dumps(o, protocol=p))
        assert got == o and not got.embedding.flags.writeable
    assert copy.copy(o) == o and copy.deepcopy(o) == o


@pytest.mark.parametrize(
    "kwargs, exc, field",
    [
        ({"embedding": np.zeros((2, 4), np.float32)}, ValueError, "embedding"),
        ({"embedding": np.zeros(0, np.float32)}, ValueError, "embedding"),
        ({"embedding": np.zeros(65537, np.float32)}, ValueError, "embedding"),
        ({"embedding": np.float32(1.0)}, ValueError, "embedding"),
        ({"embedding": [1.0, math.nan]}, ValueError, "embedding"),
        ({"embedding": [1.0, -math.inf]}, ValueError, "embedding"),
        ({"embedding": [1e39]}, ValueError, "embedding"),  # beyond float32
        ({"embedding": ["a", "b"]}, TypeError, "embedding"),
        ({"embedding": "ab"}, TypeError, "embedding"),
        ({"embedding": [1.0, None]}, TypeError, "embedding"),
        ({"embedding": [[1.0], [2.0, 3.0]]}, TypeError, "embedding"),
        ({"embedding": np.array([1 + 2j])}, TypeError, "embedding"),
        ({"embedding": np.array([True, False])}, TypeError, "embedding"),
        ({"route": ""}, ValueError, "route"),
        ({"route": None}, TypeError, "route"),
        ({"route": 3}, TypeError, "route"),
        ({"route": "x" * (MAX_ROUTE_BYTES + 1)}, ValueError, "route"),
        ({"route": "é" * (MAX_ROUTE_BYTES // 2 + 1)}, ValueError, "route"),  # counted in bytes
        ({"route": "bad\ud800"}, ValueError, "route"),
        ({"prob": 0.0}, ValueError, "prob"),
        ({"prob": -0.1}, ValueError, "prob"),
        ({"prob": 1.0000001}, ValueError, "prob"),
        ({"prob": math.nan}, ValueError, "prob"),
        ({"prob": "0.5"}, TypeError, "prob"),
        ({"prob": True}, TypeError, "prob"),
        ({"prob": None}, TypeError, "prob"),
        ({"quality": -0.01}, ValueError, "quality"),
        ({"quality": 1.5}, ValueError, "quality"),
        ({"quality": math.nan}, ValueError, "quality"),
        ({"quality": 1 + 0j}, TypeError, "quality"),
        ({"cost": -1e-9}, ValueError, "cost"),
        ({"cost": math.inf}, ValueError, "cost"),
        ({"cost": 10**400}, ValueError, "cost"),
        ({"cost": "1"}, TypeError, "cost"),
        ({"latency_ms": -1.0}, ValueError, "latency_ms"),
        ({"latency_ms": math.nan}, ValueError, "latency_ms"),
        ({"timestamp": math.inf}, ValueError, "timestamp"),
        ({"timestamp": math.nan}, ValueError, "timestamp"),
        ({"timestamp": "2024-01-01"}, TypeError, "timestamp"),
        ({"decision_id": ""}, ValueError, "decision_id"),
        ({"decision_id": "x" * (MAX_DECISION_ID_CHARS + 1)}, ValueError, "decision_id"),
        ({"decision_id": "dé"}, ValueError, "decision_id"),
        ({"decision_id": 17}, TypeError, "decision_id"),
    ],
)
def test_every_bad_field_raises_naming_it(kwargs, exc, field):
    args = dict(embedding=emb(4), route="a", prob=0.5, quality=0.5)
    args.update(kwargs)
    with pytest.raises(exc, match=field):
        Outcome(**args)
    # the decoders refuse the same values with OutcomeError (same validation)
    d = Outcome(emb(4), "a", 0.5, 0.5).to_dict()
    value = kwargs[field]
    d[field] = value.tolist() if isinstance(value, np.ndarray) else value
    with pytest.raises(OutcomeError):
        Outcome.from_dict(d)


def test_boundary_values_are_accepted():
    Outcome(emb(1), "a", 1.0, 0.0, cost=0.0, latency_ms=0.0, timestamp=0.0)
    Outcome(emb(1), "a", 5e-324, 1.0)  # the smallest positive probability
    Outcome(emb(1), "x" * MAX_ROUTE_BYTES, 1.0, 1.0, decision_id="y" * MAX_DECISION_ID_CHARS)
    Outcome(np.full(4, 3.4e38, np.float64), "a", 1.0, 1.0)  # float32 max is finite


def test_exported_names():
    assert sona.Outcome is Outcome and sona.OutcomeError is OutcomeError
    assert issubclass(OutcomeError, ValueError)
    assert OUTCOME_FORMAT_VERSION == 1


# --------------------------------------------------------------------------- binary form


@pytest.mark.parametrize("d", [1, 7, 384, 4096])
@pytest.mark.parametrize("make", [full, minimal])
def test_bytes_round_trip(d, make):
    o = make(d)
    b = o.to_bytes()
    got = Outcome.from_bytes(b)
    assert got == o and got.to_bytes() == b
    assert np.array_equal(got.embedding, o.embedding)
    assert Outcome.from_bytes(bytearray(b)) == o and Outcome.from_bytes(memoryview(b)) == o


@pytest.mark.parametrize("d", [1, 384, 4096])
def test_byte_size_is_57_plus_route_plus_id_plus_4d(d):
    assert len(minimal(d).to_bytes()) == 57 + len("small") + 4 * d
    assert len(full(d).to_bytes()) == 57 + len("gpt-4o") + len("r0-42") + 4 * d
    utf8 = Outcome(emb(d), "modèle-ü", 1.0, 1.0)
    assert len(utf8.to_bytes()) == 57 + len("modèle-ü".encode()) + 4 * d
    assert Outcome.from_bytes(utf8.to_bytes()).route == "modèle-ü"


def test_each_optional_field_alone_round_trips():
    for name, value in [("cost", 0.0), ("latency_ms", 12.0), ("decision_id", "abc"),
                        ("timestamp", -1.0)]:
        o = Outcome(emb(3), "a", 0.5, 0.5, **{name: value})
        got = Outcome.from_bytes(o.to_bytes())
        assert got == o and getattr(got, name) == value
        assert [getattr(got, n) is None for n in ("cost", "latency_ms", "decision_id",
                                                  "timestamp")].count(False) == 1


def test_bytes_are_little_endian_and_laid_out_as_documented():
    o = Outcome(np.array([1.5, -2.0], np.float32), "ab", 0.25, 0.75, cost=2.0,
                decision_id="q")
    b = o.to_bytes()
    assert b[:4] == b"SOUT" and b[4] == 1 and b[5] == 1 | 4 and b[6] == 1
    assert struct.unpack_from("<HI5d", b, 7) == (2, 2, 0.25, 0.75, 2.0, 0.0, 0.0)
    assert b[53:55] == b"ab" and b[55:56] == b"q"
    assert np.frombuffer(b, "<f4", 2, 56).tolist() == [1.5, -2.0]
    assert struct.unpack("<I", b[-4:])[0] == zlib.crc32(b[:-4])


def test_truncated_bytes_are_refused():
    b = full().to_bytes()
    for n in range(len(b)):
        with pytest.raises(OutcomeError, match="truncated"):
            Outcome.from_bytes(b[:n])


def test_trailing_bytes_are_refused():
    with pytest.raises(OutcomeError, match="trailing"):
        Outcome.from_bytes(full().to_bytes() + b"\0")


@pytest.mark.parametrize("data", [b"PK\x03\x04" + bytes(80), b"\x00" * 100, b"{}", b"x",
                                  json.dumps({"route": "a"}).encode()])
def test_foreign_bytes_are_refused(data):
    with pytest.raises(OutcomeError, match="not a sona outcome record"):
        Outcome.from_bytes(data)


def test_state_file_bytes_are_foreign():
    state = sona.state.encode_state({"x": np.zeros(3, np.float32)}, {}, "router")
    with pytest.raises(OutcomeError, match="not a sona outcome"):
        Outcome.from_bytes(state)


def test_newer_version_is_refused_before_anything_else():
    b = bytearray(full().to_bytes())
    b[4] = OUTCOME_FORMAT_VERSION + 1
    with pytest.raises(OutcomeError, match="version 2.*upgrade"):
        Outcome.from_bytes(bytes(b))
    # even when the rest would not parse under version 1 (a newer layout may differ)
    with pytest.raises(OutcomeError, match="upgrade"):
        Outcome.from_bytes(b"SOUT\x07")
    b[4] = 0
    with pytest.raises(OutcomeError, match="version 0"):
        Outcome.from_bytes(bytes(b))


def test_not_bytes_is_a_type_error():
    for bad in ("SOUT", None, [1, 2], full()):
        with pytest.raises(TypeError, match="needs bytes"):
            Outcome.from_bytes(bad)


def test_hostile_lengths_are_refused_without_allocating():
    body = bytearray(minimal().to_bytes()[:-4])
    for offset, fmt, value, what in [(9, "<I", 2**32 - 1, "dimension"),
                                     (9, "<I", 0, "dimension"),
                                     (7, "<H", 65535, "route length"),
                                     (7, "<H", 0, "route length"),
                                     (6, "<B", 255, "decision id length")]:
        bad = bytearray(body)
        struct.pack_into(fmt, bad, offset, value)
        with pytest.raises(OutcomeError, match=what):
            Outcome.from_bytes(with_crc(bytes(bad)))
    # a plausible length that the buffer does not hold is "truncated", checked before reading
    bad = bytearray(body)
    struct.pack_into("<I", bad, 9, 65536)
    with pytest.raises(OutcomeError, match="truncated"):
        Outcome.from_bytes(with_crc(bytes(bad)))


def test_checksum_mismatch_is_refused():
    b = bytearray(full().to_bytes())
    b[-1] ^= 0x01
    with pytest.raises(OutcomeError, match="checksum"):
        Outcome.from_bytes(bytes(b))


def _tampered(patch):
    body = bytearray(full(d=2).to_bytes()[:-4])
    patch(body)
    return with_crc(bytes(body))


@pytest.mark.parametrize(
    "patch, match",
    [
        (lambda b: b.__setitem__(5, b[5] | 0x10), "unknown flags"),
        (lambda b: b.__setitem__(5, b[5] & ~4), "decision id flag"),  # id present, flag off
        (lambda b: b.__setitem__(5, b[5] & ~1), "absent field cost"),  # cost bytes non-zero
        (lambda b: b.__setitem__(5, b[5] & ~8), "absent field timestamp"),
        (lambda b: struct.pack_into("<d", b, 13, 0.0), "prob"),
        (lambda b: struct.pack_into("<d", b, 13, math.nan), "prob"),
        (lambda b: struct.pack_into("<d", b, 21, 2.0), "quality"),
        (lambda b: struct.pack_into("<d", b, 29, -1.0), "cost"),
        (lambda b: struct.pack_into("<d", b, 37, math.inf), "latency_ms"),
        (lambda b: struct.pack_into("<d", b, 45, math.nan), "timestamp"),
        (lambda b: b.__setitem__(53, 0xFF), "utf-8"),  # route byte
        (lambda b: b.__setitem__(59, 0xC3), "ascii"),  # decision id byte
        (lambda b: struct.pack_into("<f", b, 64, math.nan), "embedding"),
        (lambda b: struct.pack_into("<f", b, 68, -math.inf), "embedding"),
    ],
)
def test_fields_of_a_well_checksummed_record_are_still_validated(patch, match):
    with pytest.raises(OutcomeError, match=match):
        Outcome.from_bytes(_tampered(patch))


def test_absent_field_must_be_positive_zero():
    def patch(b):
        b[5] &= ~2  # latency absent
        struct.pack_into("<d", b, 37, -0.0)

    with pytest.raises(OutcomeError, match="absent field latency_ms"):
        Outcome.from_bytes(_tampered(patch))


finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
records = st.builds(
    Outcome,
    embedding=st.integers(1, 64).flatmap(
        lambda d: st.lists(finite32, min_size=d, max_size=d)),
    route=st.text(min_size=1, max_size=20),
    prob=st.floats(0.0, 1.0, exclude_min=True),
    quality=st.floats(0.0, 1.0),
    cost=st.none() | st.floats(0.0, 1e6),
    latency_ms=st.none() | st.floats(0.0, 1e7),
    decision_id=st.none() | st.text(st.characters(max_codepoint=127), min_size=1, max_size=128),
    timestamp=st.none() | st.floats(-1e10, 1e10),
)


@settings(max_examples=200, deadline=None)
@given(records)
def test_any_valid_record_round_trips(o):
    assert Outcome.from_bytes(o.to_bytes()) == o
    assert Outcome.from_dict(json.loads(json.dumps(o.to_dict()))) == o


@settings(max_examples=300, deadline=None)
@given(records, st.data())
def test_any_byte_change_is_rejected_or_decodes_equal(o, data):
    b = bytearray(o.to_bytes())
    i = data.draw(st.integers(0, len(b) - 1))
    b[i] ^= data.draw(st.integers(1, 255))
    try:
        got = Outcome.from_bytes(bytes(b))
    except OutcomeError:
        return
    assert got == o


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(data):
    for candidate in (data, b"SOUT\x01" + data):
        try:
            Outcome.from_bytes(candidate)
        except OutcomeError:
            pass


# --------------------------------------------------------------------------- dict form


@pytest.mark.parametrize("d", [1, 4096])
@pytest.mark.parametrize("make", [full, minimal])
def test_dict_round_trip_through_json(d, make):
    o = make(d)
    dct = o.to_dict()
    assert dct["version"] == OUTCOME_FORMAT_VERSION
    assert set(dct) == {"version", "embedding", "route", "prob", "quality", "cost",
                        "latency_ms", "decision_id", "timestamp"}
    assert isinstance(dct["embedding"], list) and len(dct["embedding"]) == d
    got = Outcome.from_dict(json.loads(json.dumps(dct, allow_nan=False)))
    assert got == o


def test_dict_optional_keys_may_be_left_out():
    o = Outcome.from_dict({"version": 1, "embedding": [0.5, 1.0], "route": "a", "prob": 1,
                           "quality": 0})
    assert o == Outcome([0.5, 1.0], "a", 1.0, 0.0)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"version": 2}, "version 2.*upgrade"),
        ({"version": 0}, "version 0"),
        ({"version": "1"}, "integer 'version'"),
        ({"version": True}, "integer 'version'"),
        ({"version": None}, "integer 'version'"),
        ({"extra": 1}, "unknown keys"),
        ({"embedding": "0.5"}, "embedding"),
        ({"embedding": {"0": 0.5}}, "embedding"),
        ({"embedding": [[0.5]]}, "embedding"),
    ],
)
def test_bad_dicts_are_refused(change, match):
    d = minimal().to_dict()
    d.update(change)
    with pytest.raises(OutcomeError, match=match):
        Outcome.from_dict(d)


@pytest.mark.parametrize("key", ["version", "embedding", "route", "prob", "quality"])
def test_dict_missing_required_key(key):
    d = minimal().to_dict()
    del d[key]
    with pytest.raises(OutcomeError, match=key):
        Outcome.from_dict(d)


def test_from_dict_needs_a_mapping():
    for bad in ([("version", 1)], "{}", None, full()):
        with pytest.raises(TypeError, match="needs a dict"):
            Outcome.from_dict(bad)
