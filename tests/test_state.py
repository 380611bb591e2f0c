"""State files: round-trip, atomic save under SIGKILL, and every way a file can be bad."""

import json
import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy as stn
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import sona.state
from sona.state import (
    FORMAT_VERSION,
    StateFileError,
    decode_state,
    encode_state,
    read_state,
    write_state,
)


def sample_arrays():
    rng = np.random.default_rng(0)
    return {
        "micro.A": rng.standard_normal((2, 16)).astype(np.float32),
        "micro.B": np.zeros((2, 16), np.float32),
        "emb16": rng.standard_normal((3, 8)).astype(np.float16),
        "counts": np.arange(5, dtype=np.int64),
        "bytes": np.arange(7, dtype=np.uint8),
        "empty": np.zeros((0, 4), np.float32),
        "scalar": np.array(0.25, np.float64),
        "flags": np.array([True, False, True]),
    }


SAMPLE_META = {
    "config": {"hidden_dim": 16, "seed": 0, "lr": 0.003},
    "routes": ["small", "medium", "large"],
    "counters": {"feedbacks": 12, "nested": {"deep": [1, 2.5, None, True, "x"]}},
    "note": "unicode ok: é ✓, control char: \x1b",
}


def assert_same_arrays(got, want):
    assert set(got) == set(want)
    for name, a in want.items():
        b = got[name]
        assert b.dtype == a.dtype.newbyteorder("="), name
        assert b.shape == a.shape, name
        np.testing.assert_array_equal(b, a)


def temp_leftovers(directory):
    return sorted(p.name for p in Path(directory).iterdir() if p.name.endswith(".tmp"))


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "engine.sona"
    write_state(path, sample_arrays(), SAMPLE_META, "engine")
    return path


# ----------------------------------------------------------------------------- round trip


def test_round_trip(saved):
    arrays, meta = read_state(saved, kind="engine")
    assert_same_arrays(arrays, sample_arrays())
    assert meta == SAMPLE_META
    assert temp_leftovers(saved.parent) == []


def test_round_trip_without_kind_check_and_with_str_path(saved):
    arrays, meta = read_state(str(saved))
    assert meta == SAMPLE_META
    assert set(arrays) == set(sample_arrays())


def test_loaded_arrays_are_writable_contiguous_copies(saved):
    arrays, _ = read_state(saved)
    for a in arrays.values():
        assert a.flags.writeable and a.flags.c_contiguous
    arrays["micro.A"][...] = 7  # must not affect anything else
    again, _ = read_state(saved)
    assert not np.any(again["micro.A"] == 7)


def test_non_contiguous_fortran_and_big_endian_inputs(tmp_path):
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    arrays = {
        "strided": base[:, ::2],
        "fortran": np.asfortranarray(base),
        "big": np.arange(5, dtype=">i4"),
        "zero_d": np.array(3, np.int64),
    }
    write_state(tmp_path / "s.sona", arrays, {}, "engine")
    got, meta = read_state(tmp_path / "s.sona")
    assert meta == {}
    assert_same_arrays(got, arrays)
    assert got["zero_d"].shape == ()


def test_encode_decode_bytes_match_files(saved):
    data = encode_state(sample_arrays(), SAMPLE_META, "engine")
    assert data == saved.read_bytes()
    arrays, meta = decode_state(data, kind="engine")
    assert meta == SAMPLE_META
    assert_same_arrays(arrays, sample_arrays())
    with pytest.raises(StateFileError, match="cannot load sona state data: wrong kind"):
        decode_state(data, kind="router")
    with pytest.raises(StateFileError, match="blob 7"):
        decode_state(data[:-1], source="blob 7")
    with pytest.raises(TypeError, match="bytes"):
        decode_state("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="kind"):
        decode_state(data, kind=1)  # type: ignore[arg-type]


def test_no_arrays(tmp_path):
    write_state(tmp_path / "s.sona", {}, {"only": "meta"}, "router")
    assert read_state(tmp_path / "s.sona", kind="router") == ({}, {"only": "meta"})


def test_overwrite_replaces_content_and_keeps_permissions(tmp_path):
    path = tmp_path / "s.sona"
    write_state(path, {"x": np.zeros(3)}, {"v": 1}, "engine")
    os.chmod(path, 0o600)
    write_state(path, {"x": np.ones(3)}, {"v": 2}, "engine")
    arrays, meta = read_state(path)
    assert meta == {"v": 2} and np.all(arrays["x"] == 1)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert temp_leftovers(tmp_path) == []


def test_same_input_gives_identical_bytes(tmp_path):
    write_state(tmp_path / "a.sona", sample_arrays(), SAMPLE_META, "engine")
    reordered = dict(reversed(list(sample_arrays().items())))
    write_state(tmp_path / "b.sona", reordered, dict(reversed(list(SAMPLE_META.items()))), "engine")
    assert (tmp_path / "a.sona").read_bytes() == (tmp_path / "b.sona").read_bytes()


def test_file_is_plain_safetensors_with_sona_metadata(saved):
    # Any safetensors tool can read the arrays; the sona fields sit in __metadata__.
    loaded = stn.load_file(saved)
    np.testing.assert_array_equal(loaded["micro.A"], sample_arrays()["micro.A"])
    data = saved.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    metadata = json.loads(data[8 : 8 + n])["__metadata__"]
    assert metadata["format"] == "sona"
    assert metadata["format_version"] == str(FORMAT_VERSION) == "1"
    assert metadata["kind"] == "engine"
    assert json.loads(metadata["meta"]) == SAMPLE_META
    assert metadata["checksum"].startswith("sha256:") and len(metadata["checksum"]) == 7 + 64


@settings(max_examples=40, deadline=None)
@given(
    arrays=st.dictionaries(
        st.text(min_size=1, max_size=12).filter(lambda s: s != "__metadata__"),
        hnp.arrays(
            dtype=st.sampled_from([np.float32, np.float16, np.int64, np.uint8, np.float64]),
            shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
        ),
        max_size=4,
    ),
    meta=st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(max_size=5), children, max_size=3)
        ),
        max_leaves=10,
    ),
)
def test_round_trip_property(tmp_path_factory, arrays, meta):
    path = tmp_path_factory.mktemp("prop") / "s.sona"
    write_state(path, arrays, {"m": meta}, "engine")
    got, got_meta = read_state(path, kind="engine")
    assert got_meta == {"m": meta}
    assert set(got) == set(arrays)
    for name, a in arrays.items():
        assert got[name].dtype == a.dtype and got[name].shape == a.shape
        assert got[name].tobytes() == a.tobytes()  # bitwise, so NaN payloads survive too


# ----------------------------------------------------------------------------- bad files


def check_rejected(path, match, kind=None):
    """read_state raises StateFileError matching `match` and leaves the file as it was."""
    before = path.read_bytes()
    stat_before = os.stat(path)
    with pytest.raises(StateFileError, match=match) as info:
        read_state(path, kind=kind)
    assert path.read_bytes() == before
    assert os.stat(path).st_mtime_ns == stat_before.st_mtime_ns
    assert str(path) in str(info.value)
    return info.value


def test_state_file_error_is_a_value_error():
    assert issubclass(StateFileError, ValueError)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_state(tmp_path / "nope.sona")


def test_truncated_at_every_offset(saved, tmp_path):
    data = saved.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    # Every prefix, in memory (the exhaustive sweep) ...
    for cut in range(len(data)):
        with pytest.raises(StateFileError, match="truncated|not a safetensors|corrupted"):
            decode_state(data[:cut], kind="engine")
    # ... and through real files at the interesting offsets, which must say "truncated".
    bad = tmp_path / "cut.sona"
    for cut in (0, 4, 7, 8, 8 + n // 2, 8 + n - 1, 8 + n, 8 + n + 1, len(data) // 2 + n // 2,
                len(data) - 1):  # fmt: skip
        bad.write_bytes(data[:cut])
        check_rejected(bad, "truncated")


def test_every_single_bit_flip_is_detected(saved, tmp_path):
    """Flip each of the 8 bits of every byte: the load fails, or (only where JSON allows two
    spellings of one value, e.g. the hex case of a \\u escape) returns exactly the original."""
    data = saved.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    assert len(data) > 8 + n + 100  # header and a data region are both covered
    want_arrays, want_meta = read_state(saved)
    regions = {"length": 0, "header": 0, "data": 0}
    harmless = 0
    for offset in range(len(data)):
        for bit in range(8):
            flipped = bytearray(data)
            flipped[offset] ^= 1 << bit
            try:
                arrays, meta = decode_state(flipped, kind="engine")
            except StateFileError:
                pass
            else:
                assert meta == want_meta, (offset, bit)
                assert_same_arrays(arrays, want_arrays)
                harmless += 1
        regions["length" if offset < 8 else "header" if offset < 8 + n else "data"] += 1
    assert all(regions.values())
    assert harmless <= 4  # the sample meta has one escaped control character (\u001b)


def test_bit_flips_in_files_leave_them_untouched(saved, tmp_path):
    data = saved.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    bad = tmp_path / "flip.sona"
    rng = random.Random(7)
    offsets = [0, 3, 7, 8, 9, 8 + n - 1, 8 + n, len(data) - 1]
    offsets += rng.sample(range(8, 8 + n), 6) + rng.sample(range(8 + n, len(data)), 6)
    for offset in offsets:
        flipped = bytearray(data)
        flipped[offset] ^= 1 << rng.randrange(8)
        bad.write_bytes(flipped)
        check_rejected(bad, "cannot load sona state file", kind="engine")


@pytest.mark.parametrize("where", ["first data byte", "last data byte", "checksum", "meta"])
def test_corruption_is_reported_as_checksum_mismatch(saved, where):
    data = bytearray(saved.read_bytes())
    if where == "first data byte":
        (n,) = struct.unpack("<Q", bytes(data[:8]))
        data[8 + n] ^= 0x01
    elif where == "last data byte":
        data[-1] ^= 0x01
    elif where == "checksum":
        i = data.index(b"sha256:") + 7
        data[i] = ord("0") if data[i] != ord("0") else ord("1")
    else:
        i = data.index(b"feedbacks") + 12  # inside the value 12, still valid JSON
        assert data[i : i + 2] == b"12"
        data[i] = ord("3")
    saved.write_bytes(data)
    check_rejected(saved, "checksum mismatch")


def test_foreign_safetensors_file(tmp_path):
    plain = tmp_path / "model.safetensors"
    stn.save_file({"w": np.ones((2, 2), np.float32)}, plain)
    err = check_rejected(plain, "not a sona state file")
    assert "format: sona" in str(err)
    other = tmp_path / "other.safetensors"
    stn.save_file({"w": np.ones(2, np.float32)}, other, metadata={"format": "pt"})
    check_rejected(other, "not a sona state file")


@pytest.mark.parametrize(
    "content",
    [
        b"hello, this is a text file and certainly not a state file\n",
        b'{"format": "sona", "format_version": "1"}',
        b"",
        b"\x00" * 64,
        bytes(range(256)) * 4,
    ],
    ids=["text", "json", "empty", "zeros", "binary"],
)
def test_foreign_non_safetensors_files(tmp_path, content):
    path = tmp_path / "foreign.sona"
    path.write_bytes(content)
    check_rejected(path, "not a safetensors file|truncated|corrupted|not a sona state file")


def test_plain_text_file_message(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("some notes that happen to be long enough to look like something\n")
    check_rejected(path, "not a safetensors file")


def make_future_file(path, version):
    metadata = {
        "format": "sona",
        "format_version": str(version),
        "kind": "engine",
        "meta": "{}",
        "checksum": "sha512:" + "0" * 128,  # a future scheme we cannot verify
        "new_field": "x",
    }
    stn.save_file({"x": np.zeros(3, np.float32)}, path, metadata=metadata)


def test_future_version_file(tmp_path):
    path = tmp_path / "future.sona"
    make_future_file(path, FORMAT_VERSION + 1)
    err = check_rejected(path, "newer sona")
    assert f"format {FORMAT_VERSION + 1}, this sona reads <= {FORMAT_VERSION}" in str(err)
    make_future_file(path, 1000)
    check_rejected(path, "format 1000")


@pytest.mark.parametrize("version", ["0", "-1", "one", "", "01"])
def test_bad_version_field(tmp_path, version):
    path = tmp_path / "v.sona"
    make_future_file(path, version)
    check_rejected(path, "format_version")


def test_wrong_kind(tmp_path):
    path = tmp_path / "router.sona"
    write_state(path, {"keys": np.eye(3, dtype=np.float32)}, {"routes": ["a", "b", "c"]}, "router")
    err = check_rejected(path, "wrong kind", kind="engine")
    assert "'router'" in str(err) and "'engine'" in str(err)
    assert read_state(path, kind="router")[1] == {"routes": ["a", "b", "c"]}


def test_trailing_garbage(saved):
    saved.write_bytes(saved.read_bytes() + b"\x00")
    check_rejected(saved, "trailing")


def test_valid_checksum_but_missing_sona_field(tmp_path):
    # A file that looks like ours but lacks 'kind': corrupted, not a crash (KeyError).
    path = tmp_path / "odd.sona"
    md = {"format": "sona", "format_version": "1", "meta": "{}", "checksum": "sha256:" + "0" * 64}
    stn.save_file({"x": np.zeros(1, np.float32)}, path, metadata=md)
    check_rejected(path, "'kind'")


def test_unsupported_dtype_in_file(tmp_path):
    # bfloat16 is valid safetensors, but sona never writes it.
    path = tmp_path / "bf16.sona"
    write_state(path, {"x": np.zeros(2, np.float16)}, {}, "engine")
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    header["x"]["dtype"] = "BF16"
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])
    check_rejected(path, "BF16")


# ----------------------------------------------------------------------------- bad saves


@pytest.fixture
def old_file(tmp_path):
    path = tmp_path / "keep.sona"
    write_state(path, {"x": np.arange(4, dtype=np.float32)}, {"generation": 1}, "engine")
    return path


def assert_old_file_intact(path):
    arrays, meta = read_state(path, kind="engine")
    assert meta == {"generation": 1}
    np.testing.assert_array_equal(arrays["x"], np.arange(4, dtype=np.float32))
    assert temp_leftovers(path.parent) == []


@pytest.mark.parametrize(
    "arrays, meta, kind, exc, match",
    [
        ({"x": np.array([1, None], dtype=object)}, {}, "engine", TypeError, "dtype object"),
        ({"x": np.array(["a", "b"])}, {}, "engine", TypeError, "dtype <U1"),
        ({"x": np.zeros(2, np.complex128)}, {}, "engine", TypeError, "complex128"),
        ({"x": [1.0, 2.0]}, {}, "engine", TypeError, "numpy.ndarray"),
        ({1: np.zeros(2)}, {}, "engine", TypeError, "non-empty str"),
        ({"": np.zeros(2)}, {}, "engine", TypeError, "non-empty str"),
        ({"__metadata__": np.zeros(2)}, {}, "engine", ValueError, "reserved"),
        ([np.zeros(2)], {}, "engine", TypeError, "dict of str"),
        ({}, {"x": float("nan")}, "engine", ValueError, "JSON"),
        ({}, {"x": object()}, "engine", TypeError, "JSON"),
        ({}, ["not", "a", "dict"], "engine", TypeError, "meta must be a dict"),
        ({}, {}, "", TypeError, "kind"),
        ({}, {}, None, TypeError, "kind"),
    ],
)
def test_invalid_save_leaves_old_file(old_file, arrays, meta, kind, exc, match):
    with pytest.raises(exc, match=match):
        write_state(old_file, arrays, meta, kind)
    assert_old_file_intact(old_file)


@pytest.mark.parametrize("fail_at", ["write", "fsync", "replace"])
def test_io_failure_leaves_old_file_and_no_temp(old_file, monkeypatch, fail_at):
    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device (simulated)")

    if fail_at == "write":
        real_fdopen = os.fdopen

        class FailingWriter:
            def __init__(self, fd, mode):
                self.f = real_fdopen(fd, mode)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

            def write(self, data):
                self.f.write(data[: len(data) // 2])
                self.f.flush()
                boom()

        monkeypatch.setattr(sona.state.os, "fdopen", FailingWriter)
    elif fail_at == "fsync":
        monkeypatch.setattr(sona.state.os, "fsync", boom)
    else:
        monkeypatch.setattr(sona.state.os, "replace", boom)
    with pytest.raises(OSError, match="simulated"):
        write_state(old_file, {"x": np.zeros(1000, np.float32)}, {"generation": 2}, "engine")
    monkeypatch.undo()
    assert_old_file_intact(old_file)


def test_keyboard_interrupt_during_save_cleans_up(old_file, monkeypatch):
    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(sona.state.os, "replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_state(old_file, {"x": np.zeros(3, np.float32)}, {"generation": 2}, "engine")
    monkeypatch.undo()
    assert_old_file_intact(old_file)


def test_target_is_a_directory(tmp_path):
    target = tmp_path / "adir"
    target.mkdir()
    with pytest.raises(OSError):
        write_state(target, {"x": np.zeros(2)}, {}, "engine")
    assert target.is_dir() and list(target.iterdir()) == []
    assert temp_leftovers(tmp_path) == []


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_state(tmp_path / "no" / "such" / "dir.sona", {}, {}, "engine")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="needs POSIX permissions that apply (root ignores a read-only directory)",
)
def test_read_only_directory(old_file):
    directory = old_file.parent
    os.chmod(directory, 0o555)
    try:
        with pytest.raises(PermissionError):
            write_state(old_file, {"x": np.zeros(2)}, {"generation": 2}, "engine")
    finally:
        os.chmod(directory, 0o755)
    assert_old_file_intact(old_file)


# ----------------------------------------------------------------------------- SIGKILL


CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from sona.state import write_state

    path = sys.argv[1]
    i = 0
    while True:
        i += 1
        # ~1 MB per save, so a kill often lands inside a write or fsync.
        x = np.full(1 << 18, i, dtype=np.float32)
        write_state(path, {"x": x, "i": np.array([i], np.int64)}, {"i": i}, "engine")
        if i == 2:
            print("saving", flush=True)
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_during_save_loop_leaves_a_loadable_previous_file(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    path = tmp_path / "loop.sona"
    package_root = str(Path(sona.state.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=package_root, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    rng = random.Random(1234)
    started = time.monotonic()
    last_seen = 0
    for _ in range(5):
        child = subprocess.Popen(
            [sys.executable, str(script), str(path)],
            stdout=subprocess.PIPE,
            env=env,
            cwd=str(tmp_path),
        )
        try:
            line = child.stdout.readline()
            assert line == b"saving\n", "child failed to start saving"
            time.sleep(rng.uniform(0.0, 0.15))  # a random moment within the save loop
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            child.stdout.close()
        assert child.returncode == -signal.SIGKILL
        arrays, meta = read_state(path, kind="engine")
        i = meta["i"]
        assert i >= 2 and int(arrays["i"][0]) == i
        assert np.all(arrays["x"] == i)  # one generation, never a mix of two
        last_seen = max(last_seen, i)
        # Temp files of killed writers may remain (nothing can clean up after SIGKILL), but
        # they are hidden, named after the target, and never confused with the target.
        for name in temp_leftovers(tmp_path):
            assert name.startswith(".loop.sona.")
    assert last_seen >= 2
    assert time.monotonic() - started < 10
