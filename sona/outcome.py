"""Outcome records: what happened to one routed query, the unit of learning, logging and replay.

An :class:`Outcome` is plain, immutable data: the query embedding, the route that answered, the
probability with which the logging policy chose that route, the observed quality, and optional
cost, latency, decision id and timestamp. It is independent of any live router object, so it can
be stored, shipped between processes and learnt from later (``router.learn(outcome)``).

Binary form (:meth:`Outcome.to_bytes`, format version 1), all numbers little-endian::

    offset  size  field
    0       4     magic b"SOUT" (a foreign record is refused, not misread)
    4       1     u8  format version (1; a newer record is refused)
    5       1     u8  flags: 1 cost, 2 latency_ms, 4 decision_id, 8 timestamp; other bits 0
    6       1     u8  L: decision id length in bytes (0 without one, else 1..128)
    7       2     u16 R: route length in UTF-8 bytes (1..1024)
    9       4     u32 d: embedding dimension (1..65536)
    13      8     f64 prob
    21      8     f64 quality
    29      8     f64 cost        (0.0 when absent)
    37      8     f64 latency_ms  (0.0 when absent)
    45      8     f64 timestamp   (0.0 when absent)
    53      R     route, UTF-8
    53+R    L     decision id, ASCII
    53+R+L  4d    embedding, float32
    ...     4     u32 CRC-32 (zlib) of every byte before it

so a record takes ``57 + R + L + 4 d`` bytes (1,599 bytes for d = 384 and the route "gpt-4o"
without a decision id). Decoding checks the magic, version and every length against the buffer
before reading anything, then the checksum, then every field through the same validation the
constructor uses.

Dict form (:meth:`Outcome.to_dict`): the fields by name (absent optionals as ``None``, the
embedding as a list of floats) plus ``"version"``; JSON-serialisable.

Pure Python (numpy); does not import ``sona._core``.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Mapping
from typing import Any, NoReturn

import numpy as np

from .checks import real
from .config import MAX_DIM

__all__ = ["OUTCOME_FORMAT_VERSION", "Outcome", "OutcomeError"]

OUTCOME_FORMAT_VERSION = 1

MAX_ROUTE_BYTES = 1024
MAX_DECISION_ID_CHARS = 128

_MAGIC = b"SOUT"
_HEADER = struct.Struct("<4sBBBHI5d")
_CRC = struct.Struct("<I")
_MIN_SIZE = _HEADER.size + 1 + 4 + _CRC.size  # a 1-byte route and d = 1
_OPTIONAL_OFFSETS = {"cost": 29, "latency_ms": 37, "timestamp": 45}
_FLAG_COST, _FLAG_LATENCY, _FLAG_ID, _FLAG_TIMESTAMP = 1, 2, 4, 8
_KNOWN_FLAGS = _FLAG_COST | _FLAG_LATENCY | _FLAG_ID | _FLAG_TIMESTAMP
_FIELDS = ("embedding", "route", "prob", "quality", "cost", "latency_ms", "decision_id",
           "timestamp")
_REQUIRED = ("embedding", "route", "prob", "quality")


class OutcomeError(ValueError):
    """An outcome record cannot be decoded: malformed, truncated, corrupted, foreign or newer.

    The message says what was expected and what was found.
    """


# --------------------------------------------------------------------------- validation


def _embedding(value: Any) -> np.ndarray:
    if isinstance(value, (str, bytes)):
        raise TypeError(f"embedding must be a 1-D array of real numbers; "
                        f"got {type(value).__name__}")
    try:
        arr = np.asarray(value)
    except ValueError as exc:  # ragged nested sequences
        raise TypeError(f"embedding must be a 1-D array of real numbers; {exc}") from None
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"embedding must hold real numbers (float or int); got dtype {arr.dtype}")
    if arr.ndim != 1 or not 1 <= arr.shape[0] <= MAX_DIM:
        raise ValueError(f"embedding must have shape (d,) with 1 <= d <= {MAX_DIM}; "
                         f"got shape {arr.shape}")
    with np.errstate(over="ignore"):  # values beyond float32 become inf and are refused below
        emb = np.array(arr, dtype=np.float32)  # a private copy: caller edits must not leak in
    if not np.isfinite(emb).all():
        bad = int(np.flatnonzero(~np.isfinite(emb))[0])
        raise ValueError(f"embedding must be finite (within float32 range); "
                         f"element {bad} is {arr[bad]!r}")
    emb.flags.writeable = False
    return emb


def _route(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"route must be a str; got {type(value).__name__}")
    try:
        n = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"route must be encodable as UTF-8; got {value!r}") from None
    if not 1 <= n <= MAX_ROUTE_BYTES:
        raise ValueError(f"route must be 1..{MAX_ROUTE_BYTES} UTF-8 bytes; "
                         f"got {n} ({value[:40]!r})")
    return value


def _decision_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"decision_id must be a str or None; got {type(value).__name__}")
    if not (value.isascii() and 1 <= len(value) <= MAX_DECISION_ID_CHARS):
        raise ValueError(f"decision_id must be 1..{MAX_DECISION_ID_CHARS} ASCII characters; "
                         f"got {value[:40]!r} ({len(value)} characters)")
    return value


def _optional(name: str, value: Any, low: float) -> float | None:
    return None if value is None else real(name, value, low)


def _observed(quality: Any, cost: Any, latency_ms: Any) -> tuple:
    """The check of the observed fields: all Decision.outcome() takes from its caller."""
    return (real("quality", quality, 0.0, 1.0), _optional("cost", cost, 0.0),
            _optional("latency_ms", latency_ms, 0.0))


def _validate(embedding: Any, route: Any, prob: Any, quality: Any, cost: Any, latency_ms: Any,
              decision_id: Any, timestamp: Any) -> tuple:
    """The one check of every field, for the constructor and both decoders."""
    return (
        _embedding(embedding),
        _route(route),
        real("prob", prob, 0.0, 1.0, low_open=True),
        *_observed(quality, cost, latency_ms),
        _decision_id(decision_id),
        _optional("timestamp", timestamp, -math.inf),
    )


# --------------------------------------------------------------------------- the record


class Outcome:
    """One routed query and its observed result: immutable, comparable, serialisable.

    Parameters
    ----------
    embedding : array-like of real numbers, shape (d,), 1 <= d <= 65536
        The query embedding; stored as a read-only float32 copy. Must be finite.
    route : str
        Name of the route that answered (1..1024 UTF-8 bytes).
    prob : float in (0, 1]
        Probability with which the logging policy chose ``route`` for this query (1 for a
        deterministic policy). Learning and off-policy evaluation weight by its inverse.
    quality : float in [0, 1]
        Observed quality of the answer (the reward).
    cost : float >= 0, optional
        Cost of the call, e.g. US dollars.
    latency_ms : float >= 0, optional
        Observed latency in milliseconds.
    decision_id : str, optional
        Identifier of the decision (1..128 ASCII characters); a router learns from each
        decision id at most once.
    timestamp : float, optional
        Unix time in seconds.

    Raises
    ------
    TypeError
        a field of the wrong type (e.g. a str quality, a non-numeric embedding).
    ValueError
        a value out of range or not finite (NaN, prob 0, quality 1.5, 2-D embedding...).
        The message names the field.

    Example
    -------
    >>> o = Outcome([0.1, 0.2, 0.3], "small", prob=0.8, quality=1.0, cost=0.002)
    >>> Outcome.from_bytes(o.to_bytes()) == o
    True
    >>> len(o.to_bytes())  # 57 + len("small") + 4 * 3
    74
    """

    __slots__ = ("_embedding", "_route", "_prob", "_quality", "_cost", "_latency_ms",
                 "_decision_id", "_timestamp")
    _embedding: np.ndarray
    _route: str
    _prob: float
    _quality: float
    _cost: float | None
    _latency_ms: float | None
    _decision_id: str | None
    _timestamp: float | None

    def __init__(self, embedding: Any, route: str, prob: float, quality: float,
                 cost: float | None = None, latency_ms: float | None = None,
                 decision_id: str | None = None, timestamp: float | None = None) -> None:
        self._fill(_validate(embedding, route, prob, quality, cost, latency_ms, decision_id,
                             timestamp))

    def _fill(self, values: tuple) -> None:
        """Sets the fields (in __slots__ order) of a record being made."""
        for slot, value in zip(self.__slots__, values):
            object.__setattr__(self, slot, value)

    @classmethod
    def _of_decision(cls, embedding: np.ndarray, route: str, prob: float, quality: Any,
                     cost: Any, latency_ms: Any, decision_id: str, timestamp: float) -> Outcome:
        """Decision.outcome()'s record: checks what the caller gives (quality, cost, latency)
        and takes the rest as the router made it: a fresh finite float32 copy of the routed
        embedding (route() refuses NaN and Inf), one of its route names, the probability the
        route was drawn with (> 0: it was drawn), its canonical decision id, time.time()."""
        out = object.__new__(cls)
        embedding.flags.writeable = False
        out._fill((embedding, route, prob, *_observed(quality, cost, latency_ms), decision_id,
                   timestamp))
        return out

    # read-only fields -------------------------------------------------------------------------
    @property
    def embedding(self) -> np.ndarray:
        """The query embedding, a read-only float32 array of shape (d,)."""
        return self._embedding

    @property
    def route(self) -> str:
        return self._route

    @property
    def prob(self) -> float:
        return self._prob

    @property
    def quality(self) -> float:
        return self._quality

    @property
    def cost(self) -> float | None:
        return self._cost

    @property
    def latency_ms(self) -> float | None:
        return self._latency_ms

    @property
    def decision_id(self) -> str | None:
        return self._decision_id

    @property
    def timestamp(self) -> float | None:
        return self._timestamp

    @property
    def dim(self) -> int:
        """The embedding dimension d."""
        return int(self._embedding.shape[0])

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError(f"Outcome is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"Outcome is immutable; cannot delete {name!r}")

    def _key(self) -> tuple:
        return (self._embedding.tobytes(), self._route, self._prob, self._quality, self._cost,
                self._latency_ms, self._decision_id, self._timestamp)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Outcome):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        parts = [f"route={self._route!r}", f"prob={self._prob!r}", f"quality={self._quality!r}",
                 f"dim={self.dim}"]
        for name in ("cost", "latency_ms", "decision_id", "timestamp"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value!r}")
        return f"Outcome({', '.join(parts)})"

    def __reduce__(self) -> tuple:
        return (Outcome, (self._embedding, self._route, self._prob, self._quality, self._cost,
                          self._latency_ms, self._decision_id, self._timestamp))

    # binary form ------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The compact binary record (layout in the module docstring): 57 + R + L + 4 d bytes.

        R is the route's UTF-8 length and L the decision id's length (0 without one).

        Example
        -------
        >>> len(Outcome([0.0] * 384, "gpt-4o", 0.5, 0.9).to_bytes())
        1599
        """
        flags = 0
        for flag, value in ((_FLAG_COST, self._cost), (_FLAG_LATENCY, self._latency_ms),
                            (_FLAG_ID, self._decision_id), (_FLAG_TIMESTAMP, self._timestamp)):
            if value is not None:
                flags |= flag
        route_b = self._route.encode("utf-8")
        id_b = b"" if self._decision_id is None else self._decision_id.encode("ascii")
        head = _HEADER.pack(
            _MAGIC, OUTCOME_FORMAT_VERSION, flags, len(id_b), len(route_b), self.dim,
            self._prob, self._quality, self._cost or 0.0, self._latency_ms or 0.0,
            self._timestamp or 0.0,
        )
        body = b"".join((head, route_b, id_b, self._embedding.astype("<f4").tobytes()))
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Outcome:
        """Decode a record written by :meth:`to_bytes`.

        Raises
        ------
        TypeError
            ``data`` is not bytes-like.
        OutcomeError
            truncated or with trailing bytes, a foreign magic, a newer format version, a
            checksum mismatch, unknown flags, or any field the constructor would refuse.

        Example
        -------
        >>> o = Outcome([1.0, 2.0], "a", 1.0, 0.5, decision_id="r0-17")
        >>> Outcome.from_bytes(o.to_bytes()).decision_id
        'r0-17'
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"Outcome.from_bytes() needs bytes; got {type(data).__name__}")
        buf = bytes(data)
        n = len(buf)
        if buf[:4] != _MAGIC:
            if _MAGIC.startswith(buf):
                raise OutcomeError(f"outcome record is truncated: {n} bytes")
            raise OutcomeError(f"not a sona outcome record: expected magic {_MAGIC!r}, "
                               f"found {buf[:4]!r}")
        version = buf[4] if n > 4 else None
        if version is not None and version > OUTCOME_FORMAT_VERSION:
            raise OutcomeError(f"outcome record has format version {version}; this sona reads "
                               f"<= {OUTCOME_FORMAT_VERSION}: upgrade sona to read it")
        if version == 0:
            raise OutcomeError("outcome record is corrupted: format version 0")
        if n < _HEADER.size + _CRC.size:
            raise OutcomeError(f"outcome record is truncated: {n} bytes, a record has at least "
                               f"{_MIN_SIZE}")
        (_, _, flags, id_len, route_len, dim, prob, quality, cost, latency,
         timestamp) = _HEADER.unpack_from(buf)
        # Bound every length before using it, so a corrupted length cannot ask for a huge read.
        if not 1 <= dim <= MAX_DIM:
            raise OutcomeError(f"outcome record is corrupted: dimension {dim} "
                               f"(expected 1..{MAX_DIM})")
        if not 1 <= route_len <= MAX_ROUTE_BYTES:
            raise OutcomeError(f"outcome record is corrupted: route length {route_len} "
                               f"(expected 1..{MAX_ROUTE_BYTES})")
        if id_len > MAX_DECISION_ID_CHARS:
            raise OutcomeError(f"outcome record is corrupted: decision id length {id_len} "
                               f"(expected <= {MAX_DECISION_ID_CHARS})")
        expected = _HEADER.size + route_len + id_len + 4 * dim + _CRC.size
        if n != expected:
            what = "truncated" if n < expected else "corrupted (trailing bytes)"
            raise OutcomeError(f"outcome record is {what}: its header describes "
                               f"{expected} bytes, found {n}")
        (crc,) = _CRC.unpack_from(buf, n - _CRC.size)
        if zlib.crc32(buf[: n - _CRC.size]) != crc:
            raise OutcomeError("outcome record is corrupted: checksum mismatch")
        if flags & ~_KNOWN_FLAGS:
            raise OutcomeError(f"outcome record is corrupted: unknown flags {flags:#04x}")
        if bool(flags & _FLAG_ID) != (id_len > 0):
            raise OutcomeError("outcome record is corrupted: decision id flag and length disagree")
        for flag, name in ((_FLAG_COST, "cost"), (_FLAG_LATENCY, "latency_ms"),
                           (_FLAG_TIMESTAMP, "timestamp")):
            at = _OPTIONAL_OFFSETS[name]
            if not flags & flag and buf[at: at + 8] != bytes(8):
                raise OutcomeError(f"outcome record is corrupted: absent field {name} is not 0")
        pos = _HEADER.size
        try:
            route = buf[pos: pos + route_len].decode("utf-8")
            decision_id = buf[pos + route_len: pos + route_len + id_len].decode("ascii")
        except UnicodeDecodeError as exc:
            raise OutcomeError(f"outcome record is corrupted: {exc}") from None
        embedding = np.frombuffer(buf, dtype="<f4", count=dim, offset=pos + route_len + id_len)
        return cls._checked(
            embedding, route, prob, quality,
            cost if flags & _FLAG_COST else None,
            latency if flags & _FLAG_LATENCY else None,
            decision_id if flags & _FLAG_ID else None,
            timestamp if flags & _FLAG_TIMESTAMP else None,
        )

    @classmethod
    def _checked(cls, *fields: Any) -> Outcome:
        try:
            return cls(*fields)
        except (TypeError, ValueError) as exc:
            raise OutcomeError(f"invalid outcome record: {exc}") from None

    # dict form --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The record as a JSON-serialisable dict: every field plus ``"version"``.

        Absent optional fields are ``None``; the embedding is a list of floats (exact: each
        float32 value is a float).

        Example
        -------
        >>> Outcome([0.5], "a", 1.0, 0.25).to_dict()["embedding"]
        [0.5]
        """
        return {
            "version": OUTCOME_FORMAT_VERSION,
            "embedding": self._embedding.tolist(),
            "route": self._route,
            "prob": self._prob,
            "quality": self._quality,
            "cost": self._cost,
            "latency_ms": self._latency_ms,
            "decision_id": self._decision_id,
            "timestamp": self._timestamp,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Outcome:
        """Build a record from :meth:`to_dict`'s form (optional fields may be left out).

        Raises
        ------
        TypeError
            ``d`` is not a mapping.
        OutcomeError
            no or a non-integer ``"version"``, a newer version, unknown or missing keys, or
            any field the constructor would refuse.

        Example
        -------
        >>> Outcome.from_dict({"version": 1, "embedding": [1.0], "route": "a", "prob": 0.5,
        ...                    "quality": 1.0}).prob
        0.5
        """
        if not isinstance(d, Mapping):
            raise TypeError(f"Outcome.from_dict() needs a dict; got {type(d).__name__}")
        version = d.get("version")
        if isinstance(version, bool) or not isinstance(version, int):
            raise OutcomeError(f"outcome dict needs an integer 'version'; got {version!r}")
        if version > OUTCOME_FORMAT_VERSION:
            raise OutcomeError(f"outcome dict has format version {version}; this sona reads "
                               f"<= {OUTCOME_FORMAT_VERSION}: upgrade sona to read it")
        if version < 1:
            raise OutcomeError(f"outcome dict has an invalid format version {version}")
        unknown = sorted(str(k) for k in d if k != "version" and k not in _FIELDS)
        if unknown:
            raise OutcomeError(f"outcome dict has unknown keys {unknown}; expected {_FIELDS}")
        missing = [k for k in _REQUIRED if k not in d]
        if missing:
            raise OutcomeError(f"outcome dict is missing {missing}")
        emb = d["embedding"]
        if not isinstance(emb, (list, tuple, np.ndarray)):
            raise OutcomeError(f"invalid outcome record: embedding must be a list of numbers; "
                               f"got {type(emb).__name__}")
        return cls._checked(*(d.get(k) for k in _FIELDS))
