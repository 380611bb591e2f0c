"""The README's Python examples run as written (in a temporary directory)."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
# A copy of tests/ run against an installed wheel has no README beside it: nothing to check there.
BLOCKS = (re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
          if README.exists() else [])


@pytest.mark.skipif(not README.exists(), reason="tests run outside the source tree")
def test_readme_has_examples():
    assert len(BLOCKS) >= 2


# The fleet example talks to a Redis at the address a user's own would have: here a real
# redis-server of the test's own (tests/redis_server.py) stands at that address's place.
LOCAL_REDIS = "redis://localhost:6379/0"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = BLOCKS[index]
    if LOCAL_REDIS not in code:
        exec(compile(code, f"README.md example {index}", "exec"), {})
        return
    from redis_server import RedisServer, require_redis

    require_redis()
    with RedisServer(tmp_path / "redis") as server:
        code = code.replace(LOCAL_REDIS, server.url)
        exec(compile(code, f"README.md example {index}", "exec"), {})
