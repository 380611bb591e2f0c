"""Durable state files: one safetensors file holding arrays plus checksummed JSON metadata.

File layout (a standard safetensors file, readable by any safetensors tool)::

    8 bytes   little-endian u64 N: header length
    N bytes   JSON header: one entry per tensor (dtype, shape, data offsets) and
              "__metadata__": {str: str} with the sona fields below
    ...       tensor bytes, little-endian, C order

``__metadata__`` fields written by sona (format version 1):

    format          "sona"                 marks the file as ours (foreign files lack it)
    format_version  "1"                    files from a newer sona are refused, not misread
    kind            "engine" | "router"    what the file holds (a router file is not an engine;
                    | "budget" | "pending" "budget": a sona.BudgetPacer; "pending": the decisions
                                           a sona serve checkpoint saw waiting for feedback)
    meta            JSON text              the caller's metadata (config, counters, names...)
    checksum        "sha256:<hex>"         see below

Checksum: SHA-256 over a domain tag, the canonical JSON (sorted keys, compact separators,
ASCII) of every ``__metadata__`` entry except ``checksum``, then for every tensor in sorted
name order its name, dtype (numpy ``dtype.str`` in little-endian form), shape and raw bytes,
each variable-length item preceded by its length as a little-endian u64. It is computed over
what the loader actually parsed, so a flipped bit anywhere (header or data) either breaks the
safetensors structure or changes a hashed value.

Writes are atomic: a temp file in the target's directory is written, flushed and fsynced,
then ``os.replace``d onto the target, then the directory is fsynced where the OS allows. A
crash at any moment leaves either the previous file or the new one, never a mix.

Pure Python (numpy + safetensors); does not import ``sona._core``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import struct
import tempfile
import threading
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, Union

import numpy as np

__all__ = [
    "F32_MAX",
    "FORMAT_MARKER",
    "FORMAT_VERSION",
    "MAX_COUNT",
    "MAX_WEIGHT_ABS",
    "StateFileError",
    "check_number",
    "check_values",
    "check_weights",
    "decode_state",
    "encode_state",
    "read_state",
    "unusable",
    "write_state",
]

FORMAT_MARKER = "sona"
FORMAT_VERSION = 1

# safetensors refuses headers above 100 MB; we refuse them before allocating anything.
_MAX_HEADER_BYTES = 100_000_000
_log = logging.getLogger(__name__)

_CHECKSUM_PREFIX = "sha256:"
_DOMAIN_TAG = b"sona-state\x00"
_RESERVED_META_KEYS = ("format", "format_version", "kind", "meta", "checksum")

# safetensors dtype codes <-> numpy: the types it stores losslessly and every numpy reads.
_ST_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8,
    "BOOL": np.bool_, "C64": np.complex64,
}  # fmt: skip
_ST_CODES = {np.dtype(t).str[1:]: code for code, t in _ST_DTYPES.items()}

PathLike = Union[str, "os.PathLike[str]"]


class StateFileError(ValueError):
    """A sona state file cannot be loaded: truncated, corrupted, foreign, newer or wrong kind.

    The message names the file and what was expected versus found. Nothing was loaded and
    the file on disk was not modified.
    """


# --------------------------------------------------------------------------- checksum


def _u64(n: int) -> bytes:
    return struct.pack("<Q", n)


def _canonical_metadata(metadata: Mapping[str, str]) -> bytes:
    body = {k: v for k, v in metadata.items() if k != "checksum"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _checksum(metadata: Mapping[str, str], arrays: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    h.update(_DOMAIN_TAG)
    meta = _canonical_metadata(metadata)
    h.update(_u64(len(meta)))
    h.update(meta)
    h.update(_u64(len(arrays)))
    for name in sorted(arrays):
        a = arrays[name]
        name_b = name.encode("utf-8")
        dtype_b = a.dtype.str.encode("ascii")
        h.update(_u64(len(name_b)))
        h.update(name_b)
        h.update(_u64(len(dtype_b)))
        h.update(dtype_b)
        h.update(_u64(a.ndim))
        for dim in a.shape:
            h.update(_u64(dim))
        h.update(_u64(a.nbytes))
        h.update(a.reshape(-1).view(np.uint8).data)
    return _CHECKSUM_PREFIX + h.hexdigest()


def _little_endian(a: np.ndarray) -> np.ndarray:
    """C-contiguous, little-endian copy or view (what the file stores and the hash covers)."""
    dt = a.dtype.newbyteorder("<") if a.dtype.byteorder not in ("<", "|") else a.dtype
    return a.astype(dt, order="C", copy=False)  # not ascontiguousarray: it makes 0-d 1-d


# --------------------------------------------------------------------------- writing


def _prepare_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not isinstance(arrays, Mapping):
        raise TypeError(
            f"arrays must be a dict of str -> numpy.ndarray, got {type(arrays).__name__}"
        )
    out: dict[str, np.ndarray] = {}
    for name, a in arrays.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"array names must be non-empty str, got {name!r}")
        if name == "__metadata__":
            raise ValueError("array name '__metadata__' is reserved by the safetensors format")
        if not isinstance(a, np.ndarray):
            raise TypeError(f"arrays[{name!r}] must be a numpy.ndarray, got {type(a).__name__}")
        if a.dtype.str[1:] not in _ST_CODES:
            raise TypeError(
                f"arrays[{name!r}] has dtype {a.dtype}, which a state file cannot hold; "
                f"expected one of float16/32/64, int8..int64, uint8..uint64, bool, complex64"
            )
        # a private copy: the checksum and the bytes written must see the same values even if
        # the caller's array changes meanwhile (another thread learning while a save runs)
        out[name] = np.array(_little_endian(a), order="C", copy=True)
    return out


def _encode(
    arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], kind: str
) -> tuple[bytes, list[np.ndarray]]:
    """Validate everything and build the safetensors header; returns (prefix+header, arrays).

    We lay the file out ourselves rather than calling ``safetensors.numpy.save``: its Rust
    writer emits ``__metadata__`` in hash-map order, so equal states would give different
    bytes, and it needs a full in-memory copy of the file. The layout is the one the
    safetensors spec prescribes (tensors sorted by alignment then name, no gaps, header
    space-padded to 8 bytes) and the reader checks every file with safetensors itself.
    """
    if not isinstance(kind, str) or not kind:
        raise TypeError(f"kind must be a non-empty str such as 'engine' or 'router', got {kind!r}")
    if not isinstance(meta, Mapping):
        raise TypeError(f"meta must be a dict, got {type(meta).__name__}")
    tensors = _prepare_arrays(arrays)
    try:
        meta_json = json.dumps(
            dict(meta), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"meta must be JSON-serialisable (finite numbers only): {exc}") from None
    metadata = {
        "format": FORMAT_MARKER,
        "format_version": str(FORMAT_VERSION),
        "kind": kind,
        "meta": meta_json,
    }
    metadata["checksum"] = _checksum(metadata, tensors)

    header: dict[str, Any] = {"__metadata__": metadata}
    ordered = sorted(tensors, key=lambda k: (-tensors[k].dtype.alignment, k))
    offset = 0
    for name in ordered:
        a = tensors[name]
        header[name] = {
            "dtype": _ST_CODES[a.dtype.str[1:]],
            "shape": list(a.shape),
            "data_offsets": [offset, offset + a.nbytes],
        }
        offset += a.nbytes
    # UTF-8 rather than \u escapes: an escape can be bit-flipped into an equivalent one
    # (\u00e9 -> \u00E9), which is harmless but would slip past "every flip is detected".
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw, [tensors[name] for name in ordered]


def encode_state(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], kind: str) -> bytes:
    """The bytes :func:`write_state` would write (same validation and errors, no file)."""
    head, payload = _encode(arrays, meta, kind)
    return b"".join([head] + [a.reshape(-1).view(np.uint8).tobytes() for a in payload])


_UMASK: int | None = None


def _new_file_mode() -> int:
    # mkstemp creates 0600; a state file should get the mode any new file would get.
    # Reading the umask means setting it: done once, at first save, under the GIL.
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return 0o666 & ~_UMASK


def _fsync_directory(directory: str) -> None:
    flags = getattr(os, "O_DIRECTORY", None)
    if flags is None:  # Windows: directories cannot be opened/fsynced; rename is durable enough
        return
    try:
        fd = os.open(directory, os.O_RDONLY | flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories (EINVAL); the rename has happened
    finally:
        os.close(fd)


def write_state(
    path: PathLike, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], kind: str
) -> None:
    """Atomically write ``arrays`` and ``meta`` to ``path`` as a sona state file.

    Parameters
    ----------
    path : str or os.PathLike
        Target file. Its directory must exist. An existing file is replaced atomically and
        keeps its permission bits (a symlink at ``path`` is replaced, not followed).
    arrays : dict of str -> numpy.ndarray
        Numeric or bool arrays of any shape (including empty and 0-d). Non-contiguous or
        big-endian arrays are copied to C-contiguous little-endian first.
    meta : dict
        JSON-serialisable metadata (nested dicts/lists fine; NaN/Inf are rejected).
        Keys should be str: JSON turns other keys into str.
    kind : str
        What the file holds, e.g. ``"engine"`` or ``"router"``; checked by :func:`read_state`.

    Raises
    ------
    TypeError
        unsupported array dtype (e.g. object), non-array value, non-JSON meta.
    ValueError
        NaN/Inf in meta, reserved array name.
    OSError
        the file system refused (read-only directory, disk full, ...). In every error case
        the previous file at ``path`` is untouched and no temp file is left behind.

    Example
    -------
    >>> write_state("e.sona", {"A": np.zeros(8, np.float32)}, {"n": 1}, "engine")  # doctest: +SKIP
    """
    target = _path(path)
    head, payload = _encode(arrays, meta, kind)  # all validation happens before touching disk

    directory = os.path.dirname(os.path.abspath(target))
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        mode = _new_file_mode()

    prefix = "." + os.path.basename(target) + "."
    _remove_orphans(directory, prefix)
    fd, tmp = tempfile.mkstemp(prefix=f"{prefix}{os.getpid()}.", suffix=".tmp", dir=directory)
    with _ACTIVE_LOCK:
        _ACTIVE.add(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(head)
            for a in payload:
                if a.nbytes:
                    f.write(a.reshape(-1).view(np.uint8).data)
            f.flush()
            os.fsync(f.fileno())
        if hasattr(os, "chmod"):
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        # Also on KeyboardInterrupt: never leave a half-written temp file next to the target.
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE.discard(tmp)
    _fsync_directory(directory)
    _log.info("saved %s state to %s (%d bytes)", kind, target,
              len(head) + sum(a.nbytes for a in payload))


# Temp files being written by this process (a save in another thread must not remove them).
_ACTIVE: set[str] = set()
_ACTIVE_LOCK = threading.Lock()


def _path(path: Any) -> str:
    """path (str, bytes or os.PathLike) as a str; TypeError naming what came otherwise."""
    try:
        return os.fsdecode(os.fspath(path))
    except TypeError:
        raise TypeError(f"path must be a str, bytes or os.PathLike; got "
                        f"{type(path).__name__}") from None


def _remove_orphans(directory: str, prefix: str) -> None:
    """Removes temp files of earlier saves to the same target whose writer died (killed mid-save:
    no exception handler ran). A temp file is named <prefix><pid>.<random>.tmp; it is an orphan
    when that process is gone, or is this one and no save of ours is writing it."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    me = os.getpid()
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        # exactly <pid>.<random>: a longer name belongs to another target ("x.sona.1", ...)
        pid_s, dot, rand = name[len(prefix):-len(".tmp")].partition(".")
        if not (pid_s.isdigit() and dot and rand and "." not in rand):
            continue
        full = os.path.join(directory, name)
        pid = int(pid_s)
        if pid == me:
            with _ACTIVE_LOCK:
                if full in _ACTIVE:
                    continue
        elif _alive(pid):
            continue
        try:
            os.unlink(full)
        except OSError:
            pass


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # exists (another user's) or cannot tell: leave its file alone
    return True


# --------------------------------------------------------------------------- loaded values
# A file with a valid checksum can still hold values no running sona produces (hand-edited,
# written by a buggy tool): the loaders check them as strictly as construction checks its inputs.

F32_MAX = float(np.finfo(np.float32).max)
#: Largest |weight| a loaded adapter, key or bias may hold: far beyond anything learning
#: produces, and small enough that a forward pass of an accepted embedding (|x_i| <= 1e6) stays
#: inside float32.
MAX_WEIGHT_ABS = 1e6
#: Counters are counts of events: below 2**63 nothing can make them wrap at 2**64.
MAX_COUNT = 2**63 - 1


def check_values(fail, name: str, a: np.ndarray, lo: float = -F32_MAX,
                 hi: float = F32_MAX) -> None:
    """Calls fail(msg) unless every value of ``a`` is finite and in [lo, hi]."""
    if a.size == 0:
        return
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        fail(f"array {name!r} contains NaN or Inf")
    low, high = float(a.min()), float(a.max())
    if low < lo or high > hi:
        fail(f"array {name!r} holds values in [{low:g}, {high:g}]; expected [{lo:g}, {hi:g}]")


def check_weights(fail, arrays: Mapping[str, np.ndarray], names) -> None:
    """Calls fail(msg) unless every array named holds finite weights within +-MAX_WEIGHT_ABS."""
    for name in names:
        check_values(fail, name, arrays[name], -MAX_WEIGHT_ABS, MAX_WEIGHT_ABS)


def check_number(fail, name: str, v: Any, lo: float, hi: float, integer: bool = False) -> None:
    """Calls fail(msg) unless ``v`` is a number (an int when ``integer``; never a bool) in
    [lo, hi] (so a float is finite and fits float32 when [lo, hi] does)."""
    ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok_type or not (lo <= v <= hi):
        kind = "an integer" if integer else "a number"
        fail(f"{name} must be {kind} in [{lo:g}, {hi:g}]; got {v!r}")


# --------------------------------------------------------------------------- reading


def unusable(kind: str, src: str) -> Callable[[str], NoReturn]:
    """The ``fail(why)`` that an engine's or a router's layout checks call: raises
    StateFileError("cannot load sona <kind> state <src>: <why>"), the container's own wording
    (see _fail) with the kind of state that did not fit. ``src``: a path, or "from bytes"."""

    def fail(why: str) -> NoReturn:
        raise StateFileError(f"cannot load sona {kind} state {src}: {why}")

    return fail


def _fail(src: str, what: str) -> StateFileError:
    # src names where the bytes came from: "file '/path/x.sona'" or "data" (decode_state).
    return StateFileError(f"cannot load sona state {src}: {what}")


def _parse_header(src: str, data: bytes) -> tuple[dict, int]:
    """Return (header dict, header length) or raise StateFileError with the precise reason."""
    size = len(data)
    if size < 8:
        raise _fail(
            src,
            f"file is truncated or not a state file ({size} bytes; a safetensors "
            f"file starts with an 8-byte header length)",
        )
    (n,) = struct.unpack("<Q", data[:8])
    looks_json = data[8:9] == b"{"
    if n > _MAX_HEADER_BYTES or (n > size - 8 and not looks_json):
        raise _fail(
            src,
            "not a safetensors file (header length field is implausible); "
            "expected a file written by sona's save()",
        )
    if n > size - 8:
        raise _fail(
            src,
            f"file is truncated: header needs {n} bytes after the 8-byte prefix, "
            f"file has {size - 8}",
        )
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except RecursionError:
        raise _fail(src, "header is corrupted (JSON nested too deeply)") from None
    except (UnicodeDecodeError, ValueError):
        if looks_json:
            raise _fail(src, "header is corrupted (not valid JSON)") from None
        raise _fail(
            src,
            "not a safetensors file (header is not JSON); expected a file written by sona's save()",
        ) from None
    if not isinstance(header, dict):
        raise _fail(src, "header is corrupted (JSON header is not an object)")
    return header, n


def _check_metadata(src: str, header: dict) -> dict[str, str]:
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_MARKER:
        raise _fail(
            src,
            f"not a sona state file (a safetensors file without the "
            f"'format: {FORMAT_MARKER}' marker)",
        )
    version_s = metadata.get("format_version")
    try:
        version = int(version_s)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise _fail(
            src, f"metadata is corrupted (format_version {version_s!r} is not an integer)"
        ) from None
    if version > FORMAT_VERSION:
        raise _fail(
            src,
            f"written by a newer sona: format {version}, this sona reads "
            f"<= {FORMAT_VERSION}; upgrade sona to load it",
        )
    if version < 1 or str(version) != version_s:
        raise _fail(src, f"metadata is corrupted (format_version {version_s!r})")
    for key in _RESERVED_META_KEYS:
        if not isinstance(metadata.get(key), str):
            raise _fail(src, f"metadata is corrupted (missing or non-text {key!r})")
    return metadata


def _expected_size(src: str, header: dict, n: int) -> int:
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and o >= 0 for o in offsets)
        ):
            raise _fail(src, f"header is corrupted (bad data_offsets for {name!r})")
        end = max(end, offsets[1])
    return 8 + n + end


def read_state(path: PathLike, kind: str | None = None) -> tuple[dict[str, np.ndarray], Any]:
    """Load a state file written by :func:`write_state`; verify everything before returning.

    Parameters
    ----------
    path : str or os.PathLike
    kind : str or None
        Expected kind (``"engine"``, ``"router"``); ``None`` accepts any.

    Returns
    -------
    (arrays, meta)
        ``arrays``: dict of name -> writable, C-contiguous numpy array (fresh copies);
        ``meta``: the JSON metadata given to :func:`write_state`.

    Raises
    ------
    FileNotFoundError
        no file at ``path`` (other OSErrors, e.g. permission, propagate too).
    StateFileError
        truncated, corrupted (checksum mismatch), foreign (not safetensors, or safetensors
        without the sona marker), written by a newer format version, or of another kind.
        Nothing is returned partially and the file is never modified.

    Example
    -------
    >>> arrays, meta = read_state("engine.sona", kind="engine")  # doctest: +SKIP
    """
    p = _path(path)
    with open(p, "rb") as f:
        data = f.read()
    arrays, meta = decode_state(data, kind=kind, source=f"file {p!r}")
    _log.info("read %s state from %s (%d bytes)", kind or "sona", p, len(data))
    return arrays, meta


def decode_state(
    data: bytes | bytearray | memoryview, kind: str | None = None, source: str = "data"
) -> tuple[dict[str, np.ndarray], Any]:
    """Like :func:`read_state` for the bytes of a state file (e.g. kept in a database).

    ``source`` names the origin in error messages. Raises :class:`StateFileError`.
    """
    from safetensors import deserialize

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode_state() needs bytes, got {type(data).__name__}")
    if kind is not None and not isinstance(kind, str):
        raise TypeError(f"kind must be a str or None, got {type(kind).__name__}")
    data = bytes(data)
    header, n = _parse_header(source, data)
    metadata = _check_metadata(source, header)

    expected = _expected_size(source, header, n)
    if len(data) < expected:
        raise _fail(source, f"file is truncated: expected {expected} bytes, found {len(data)}")
    if len(data) > expected:
        raise _fail(source, f"file is corrupted: {len(data) - expected} unexpected trailing bytes")

    try:
        views = deserialize(data)
    except Exception as exc:  # safetensors raises its own SafetensorError (plus a few others)
        raise _fail(source, f"file is corrupted ({exc})") from None

    arrays: dict[str, np.ndarray] = {}
    for name, view in sorted(views, key=lambda item: item[0]):
        st_dtype = _ST_DTYPES.get(view["dtype"])
        if st_dtype is None:
            raise _fail(
                source, f"array {name!r} has dtype {view['dtype']!r}, which sona never writes"
            )
        dtype = np.dtype(st_dtype).newbyteorder("<")
        shape = tuple(view["shape"])
        arrays[name] = np.frombuffer(view["data"], dtype=dtype).reshape(shape).copy()

    if _checksum(metadata, arrays) != metadata["checksum"]:
        raise _fail(
            source,
            "file is corrupted (checksum mismatch: the contents changed after they were written)",
        )

    file_kind = metadata["kind"]
    if kind is not None and file_kind != kind:
        raise _fail(source, f"wrong kind: the file holds {file_kind!r} state, expected {kind!r}")

    try:
        meta = json.loads(metadata["meta"])
    except (ValueError, RecursionError):  # checksum matched: written like this, still not ours
        raise _fail(source, "metadata is corrupted (meta is not JSON, or nested too deeply)") \
            from None

    # Native byte order for the caller (a no-op on little-endian machines).
    for name, a in arrays.items():
        if not a.dtype.isnative:
            arrays[name] = a.astype(a.dtype.newbyteorder("="))
    return arrays, meta
