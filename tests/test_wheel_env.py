"""Checks on the installed build itself, switched on by the wheel builders' environment.

cibuildwheel sets SONA_REQUIRE_AVX2=1 when it tests a Linux x86_64 wheel: every CI machine there
has AVX2, so a wheel whose "avx2" backend is missing (kernels compiled out, detection broken)
must fail its tests instead of silently shipping scalar-only.
"""

import os
import platform

import pytest

import sona


def _required() -> bool:
    return os.environ.get("SONA_REQUIRE_AVX2", "").strip() not in ("", "0")


@pytest.mark.skipif(not _required(), reason="SONA_REQUIRE_AVX2 is not set")
def test_avx2_backend_present_when_required():
    assert "avx2" in sona.backends(), (
        f"SONA_REQUIRE_AVX2 is set but sona.backends() = {sona.backends()} "
        f"(machine {platform.machine()}, cpu_features {sona.cpu_features()})"
    )


def test_non_x86_builds_are_scalar_only():
    # The AVX2 kernels compile to nothing off x86-64 (csrc/target.h), so only "scalar" can exist.
    if platform.machine().lower() in ("x86_64", "amd64", "x64", "i686", "x86"):
        pytest.skip("x86 machine")
    assert sona.backends() == ["scalar"]
