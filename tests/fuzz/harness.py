"""Run a reader on a mutated file in a forked child under a memory cap, and hypothesis mutations.

A reader passes when it returns (its result checked by the caller's function) or raises
AmodalkitError naming a path; any other exception, a crash, running out of the memory cap
or a hang fails the example.
"""

from __future__ import annotations

import copy
import json
import math
import multiprocessing
import os
import resource
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from amodalkit.errors import AmodalkitError

MEMORY_CAP = 2 << 30
TIMEOUT_S = 60
DEEP = int(os.environ.get("AMODALKIT_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=DEEP or 25, deadline=None, derandomize=not DEEP, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _vm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def _child(send: multiprocessing.connection.Connection, fn: Callable[..., object], args: tuple) -> None:
    code = 0
    try:
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(1)
        cap = _vm_bytes() + MEMORY_CAP
        resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
        fn(*args)
        send.send(("ok", ""))
    except AmodalkitError as exc:
        send.send(("error" if exc.path else "unnamed", str(exc)))
    except BaseException:
        send.send(("other", traceback.format_exc()))
        code = 1
    finally:
        send.close()
        os._exit(code)


def run_capped(fn: Callable[..., object], *args: object) -> None:
    """Call ``fn(*args)`` in a forked child under the memory cap; fail unless it returns or raises
    AmodalkitError with a path."""
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, fn, args))
    proc.start()
    send.close()
    try:
        if not recv.poll(TIMEOUT_S):
            proc.kill()
            raise AssertionError(f"reader hung for {TIMEOUT_S} s on {args}")
        try:
            kind, detail = recv.recv()
        except EOFError as exc:
            proc.join()
            raise AssertionError(f"reader crashed (exit code {proc.exitcode}) on {args}") from exc
    finally:
        proc.join()
        recv.close()
    assert kind in ("ok", "error"), f"{kind} on {args}:\n{detail}"


def flip(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    """`data` with the byte at each position xor-ed with a value."""
    out = bytearray(data)
    for pos, xor in edits:
        out[pos % len(out)] ^= xor
    return bytes(out)


def byte_mutations(data: bytes) -> st.SearchStrategy[bytes]:
    """Truncations, byte flips and inserted junk of a valid file."""
    n = len(data)
    return st.one_of(
        st.integers(0, n - 1).map(lambda k: data[:k]),
        st.lists(st.tuples(st.integers(0, n - 1), st.integers(1, 255)), min_size=1, max_size=8)
        .map(lambda edits: flip(data, edits)),
        st.tuples(st.integers(0, n), st.binary(min_size=1, max_size=64))
        .map(lambda t: data[:t[0]] + t[1] + data[t[0]:]),
    )


NASTY = st.one_of(
    st.sampled_from(["abc", "", "é", -1, 0, 1, 2**31, 2**70, -(2**70), 1e308, -0.5, math.nan, math.inf, None,
                     True, [], {}, [60000, 60000], [0, 0], [[1.5]], {"size": [60000, 60000], "counts": "0"},
                     {"size": [2, 2], "counts": [1, 1]}, [1e9, 1e9, -1e9, 5, 3, 1e9]]),
    st.integers(), st.text(max_size=6),
)


def _paths(obj: object, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:6]):
            out += _paths(v, (*prefix, i))
    return out


def _set(obj: object, path: tuple, value: object) -> object:
    if not path:
        return value
    obj = copy.deepcopy(obj)
    node = obj
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return obj


def _delete(obj: object, path: tuple) -> object:
    obj = copy.deepcopy(obj)
    node = obj
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return obj


def json_mutations(obj: object) -> st.SearchStrategy[bytes]:
    """A JSON document with one value replaced (types, huge numbers, sizes) or deleted, or bytes mutated."""
    paths = _paths(obj)
    text = json.dumps(obj).encode()
    return st.one_of(
        st.tuples(st.sampled_from(paths), NASTY).map(lambda t: json.dumps(_set(obj, *t)).encode()),
        st.sampled_from(paths[1:] or [()]).map(lambda p: json.dumps(_delete(obj, p) if p else None).encode()),
        byte_mutations(text),
    )
