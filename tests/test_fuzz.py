"""
Fuzzing both protocol implementations in-process (hypothesis over raw bytes).

Inputs: arbitrary bytes, structured garbage made of HTTP fragments, generated valid requests
(methods, targets, headers, bodies in every framing, pipelined batches of up to 16) and mutations
of them (byte flips, truncation, deletion, duplication, inserted CR / LF / NUL / header lines,
huge numbers), each cut into random read sizes, with write flow control toggled between reads
and, sometimes, the client vanishing mid-request or mid-response, half-closing early, or the
server's timeout check firing; some runs use limits small enough to hit (414, 431, 413, a short
request queue).

Properties (:mod:`fuzzing`): no exception escapes a protocol callback, nothing is reported to
the loop, no hang (the loop is driven a bounded number of iterations: reading resumes, the
connection closes after EOF), no task outlives the connection, every byte written parses as
well-formed HTTP/1.x responses, every error response closes the connection and is the last one,
a closing response closes the connection before the client's EOF, the compiled and pure-Python
twins write the same bytes (``Date`` values aside), log the same and close the same way, and
valid pipelined requests get exactly one response each, in order, with the right body.

The suite runs a bounded, deterministic profile (``FUZZ_EXAMPLES``, default 60 per test, three
times that for raw bytes). A long, randomized run (20,000 per test unless ``FUZZ_EXAMPLES``)::

    HYPOTHESIS_PROFILE=fuzz-long .venv/bin/python -m pytest tests/test_fuzz.py

and a coverage-guided one with atheris: ``fuzz/fuzz_protocol.py``.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fakes import EXPECT_COMPILED, IMPLEMENTATIONS
from fuzzing import (
    SMALL_LIMITS,
    Step,
    check_expected,
    check_outcome,
    check_same,
    expectation,
    gzip_body,
    run_connection,
    split_reads,
    steps_from_bytes,
)

settings.register_profile(
    "fuzz", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")), deadline=None,
    derandomize=True, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
)
settings.register_profile(
    "fuzz-long", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "20000")), deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "fuzz")
if PROFILE not in ("fuzz", "fuzz-long"):
    PROFILE = "fuzz"
FUZZ = settings.get_profile(PROFILE)
# Raw-byte inputs are cheap (most stop at the first line): three times the examples.
FUZZ_CHEAP = settings(FUZZ, max_examples=FUZZ.max_examples * 3)
# The long run may take hours: no per-test timeout then.
TIMEOUT = pytest.mark.timeout(0 if PROFILE == "fuzz-long" else 120)


@pytest.fixture(scope="module")
def twins():
    """The compiled and the pure-Python protocol classes, in that order."""
    found = {i.name: i for i in IMPLEMENTATIONS}
    for impl in found.values():
        if not impl.available:
            if EXPECT_COMPILED:
                pytest.fail(f"the {impl.name} implementation did not load: {impl.error}")
            pytest.skip(f"{impl.name} implementation not built: nothing to compare")
    return found["cython"].protocol_class, found["python"].protocol_class


def run_both(twins, steps, may_have_head=True, cfg=None):
    """Run ``steps`` on both twins, check each outcome and that they are the same."""
    compiled = run_connection(twins[0], steps, cfg)
    python = run_connection(twins[1], steps, cfg)
    check_outcome(compiled, may_have_head)
    check_outcome(python, may_have_head)
    check_same(compiled, python)
    return compiled, python


# --- strategies -------------------------------------------------------------------------------

METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
KINDS = ["", "echo", "async", "stream", "streamlen", "empty", "raise", "none"]
PATH_CHARS = "abcxyzABC0189-._~!$&'()*+,;=:@"
TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCXYZ0123456789!#$%&'*+-.^_`|~"
# Header names the generator leaves alone: they change framing or the connection, and the
# generator sets them itself when it wants to.
RESERVED = {"content-length", "transfer-encoding", "connection", "expect", "upgrade", "host",
            "content-encoding", "te", "trailer", "keep-alive", "http2-settings"}

percent_escape = st.integers(0, 255).map(lambda b: "%%%02X" % b)
segment = st.lists(st.one_of(st.sampled_from(PATH_CHARS), percent_escape),
                   max_size=12).map("".join)
query = st.one_of(st.just(""), st.lists(st.sampled_from(PATH_CHARS + "/?"), min_size=0,
                                        max_size=16).map(lambda cs: "?" + "".join(cs)))
header_name = st.text(TOKEN_CHARS, min_size=1, max_size=20).filter(
    lambda n: n.lower() not in RESERVED)
header_value = st.binary(max_size=40).map(
    lambda b: bytes(c for c in b if c == 9 or 32 <= c < 127 or c >= 0x80).strip(b" \t"))
body_bytes = st.one_of(st.just(b""), st.binary(min_size=1, max_size=300),
                       st.integers(1, 70000).map(lambda n: b"z" * n))


@st.composite
def valid_request(draw):
    """``(bytes, Expected)`` for one well-formed request."""
    method = draw(st.sampled_from(METHODS))
    version = draw(st.sampled_from(["1.1", "1.1", "1.1", "1.0"]))
    kind = draw(st.sampled_from(KINDS))
    target = "/" + kind + ("/" if kind else "") + draw(segment) + draw(query)
    lines = [f"{method} {target} HTTP/{version}".encode(), b"Host: fuzz.test"]
    for _ in range(draw(st.integers(0, 4))):
        lines.append(draw(header_name).encode() + b": " + draw(header_value))
    if version == "1.1":
        connection = draw(st.sampled_from([None, None, None, "keep-alive", "close"]))
        keep_alive = connection != "close"
    else:
        connection = draw(st.sampled_from([None, "keep-alive", "keep-alive"]))
        keep_alive = connection == "keep-alive"
    if connection:
        lines.append(b"Connection: " + connection.encode())
    body = b"" if method == "HEAD" else draw(body_bytes)
    wire_body = b""
    if body:
        framing = draw(st.sampled_from(["length", "chunked", "gzip"] if version == "1.1"
                                       else ["length", "gzip"]))
        if framing == "gzip":
            wire_body = gzip_body(body)
            lines.append(b"Content-Encoding: gzip")
            lines.append(b"Content-Length: %d" % len(wire_body))
        elif framing == "length":
            wire_body = body
            lines.append(b"Content-Length: %d" % len(body))
        else:
            lines.append(b"Transfer-Encoding: chunked")
            sizes = draw(st.lists(st.integers(1, 200), min_size=1, max_size=6))
            chunks, pos, i = [], 0, 0
            while pos < len(body):
                size = sizes[i % len(sizes)]
                ext = b";ext=%d" % i if draw(st.booleans()) else b""
                piece = body[pos:pos + size]
                chunks.append(b"%x%s\r\n%s\r\n" % (len(piece), ext, piece))
                pos += size
                i += 1
            wire_body = b"".join(chunks) + b"0\r\n\r\n"
        if version == "1.1" and draw(st.integers(0, 4)) == 0:
            lines.append(b"Expect: 100-continue")
    raw = b"\r\n".join(lines) + b"\r\n\r\n" + wire_body
    return raw, expectation(method, target.encode(), body, version, keep_alive)


valid_batch = st.lists(valid_request(), min_size=1, max_size=16)

INTERESTING = [
    b"\r", b"\n", b"\x00", b"\r\n", b"\r\n\r\n", b" ", b"\t", b":", b"\xff", b"%", b"%00",
    b"?", b"#", b"/", b"0", b"-1", b"HTTP/1.0", b"HTTP/1.1", b"HTTP/2.0", b"HTTP/0.9",
    b"99999999999999999999999999", b"ffffffffffffffffffffffff",
    b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: gzip, chunked\r\n",
    b"Transfer-Encoding: chunked, identity\r\n", b"Content-Length: 5\r\n",
    b"Content-Length: 0\r\n", b"Content-Length: -1\r\n", b"Content-Length: 1, 2\r\n",
    b"Content-Length: 99999999999999999999999\r\n", b"Content-Length: 13000000\r\n",
    b"Content-Encoding: gzip\r\n", b"Content-Encoding: deflate\r\n",
    b"Content-Encoding: br\r\n", b" folded\r\n", b"Expect: 100-continue\r\n",
    b"Connection: close\r\n", b"Connection: keep-alive\r\n",
    b"Upgrade: websocket\r\nConnection: Upgrade\r\n",
    b"Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n",
    b"Host: a\r\n", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"HEAD / HTTP/1.1\r\n\r\n",
    b"POST /stream HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    b"0\r\n\r\n", b"5;a=b\r\nhello\r\n", b"CONNECT a:1 HTTP/1.1\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"GET /raise HTTP/1.0\r\n\r\n",
]


@st.composite
def mutated(draw, base):
    """``base`` (bytes) with one to four random mutations."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "delete", "insert", "insert", "duplicate",
                                   "truncate", "number"]))
        pos = draw(st.integers(0, len(data)))
        if op == "flip" and data:
            pos = min(pos, len(data) - 1)
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 8))]
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from(INTERESTING))
        elif op == "duplicate":
            data[pos:pos] = data[pos:pos + draw(st.integers(1, 64))]
        elif op == "truncate":
            del data[pos:]
        elif op == "number":
            # Replace the next decimal number with a huge one (lengths, chunk sizes, versions).
            start = next((i for i in range(pos, len(data)) if 48 <= data[i] <= 57), None)
            if start is not None:
                end = start
                while end < len(data) and 48 <= data[end] <= 57:
                    end += 1
                data[start:end] = draw(st.sampled_from(
                    [b"18446744073709551616", b"9" * 40, b"4294967296", b"0", b"00000001"]))
    return bytes(data)


structured_garbage = st.lists(st.one_of(st.sampled_from(INTERESTING),
                                        st.binary(max_size=8)), max_size=30).map(b"".join)
arbitrary = st.one_of(st.binary(max_size=600), structured_garbage)


@st.composite
def client_script(draw, data, disrupt=True):
    """Steps delivering ``data`` in random reads, with flow control; with ``disrupt``, maybe
    a disconnect, a timeout check and an early EOF at random points."""
    sizes = draw(st.lists(st.integers(1, 96), min_size=1, max_size=8))
    # Large bodies in larger reads: at most about 64 reads per connection, for speed.
    floor = len(data) // 64
    reads = split_reads(data, [max(size, floor) for size in sizes])
    steps = []
    for chunk in reads:
        flow = draw(st.sampled_from(["", "", "", "pause", "resume"]))
        if flow:
            steps.append(Step(flow))
        # Half the reads come the way asyncio's transports deliver them (get_buffer).
        steps.append(Step(draw(st.sampled_from(["data", "buffered"])), chunk))
    if disrupt and draw(st.integers(0, 5)) == 0:
        steps.insert(draw(st.integers(0, len(steps))), Step("lose"))
    if disrupt and draw(st.integers(0, 5)) == 0:
        steps.insert(draw(st.integers(0, len(steps))), Step("timeout"))
    if disrupt and draw(st.integers(0, 3)) == 0:
        # Half-close early, maybe while not reading (pause) and reading again later (resume).
        steps.insert(draw(st.integers(0, len(steps))), Step("eof"))
    return steps


def batch_bytes(batch):
    return b"".join(raw for raw, _ in batch)


# --- the fuzz tests ---------------------------------------------------------------------------

@pytest.mark.parametrize("cut", [None, 10])
def test_connection_opening_with_the_http2_preface_is_handed_over(twins, cut):
    # (a script the arbitrary-bytes fuzzer draws now and then: its tokens include the preface)
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    steps = ([Step("data", preface)] if cut is None
             else [Step("data", preface[:cut]), Step("data", preface[cut:])])
    compiled, python = run_both(twins, steps)
    assert compiled.handed_over and python.handed_over


@TIMEOUT
@FUZZ_CHEAP
@given(data=st.data(), payload=arbitrary, cfg=st.sampled_from([None, SMALL_LIMITS]))
def test_arbitrary_bytes(twins, data, payload, cfg):
    steps = data.draw(client_script(payload))
    run_both(twins, steps, cfg=cfg)


@TIMEOUT
@FUZZ
@given(data=st.data(), batch=valid_batch,
       cfg=st.sampled_from([None, {"max_pipelined_requests": 1},
                            {"max_pipelined_requests": 3}]))
def test_valid_pipelined_requests(twins, data, batch, cfg):
    # A short request queue makes reading pause and resume often.
    steps = data.draw(client_script(batch_bytes(batch), disrupt=False))
    compiled, python = run_both(twins, steps, cfg=cfg,
                                may_have_head=any(e.method == "HEAD" for _, e in batch))
    expected = [e for _, e in batch]
    check_expected(compiled, expected)
    check_expected(python, expected)


@TIMEOUT
@FUZZ
@given(data=st.data(), batch=valid_batch)
def test_client_vanishing_mid_request_or_response(twins, data, batch):
    steps = data.draw(client_script(batch_bytes(batch), disrupt=False))
    steps.insert(data.draw(st.integers(0, len(steps))), Step("lose"))
    compiled, python = run_both(twins, steps)
    expected = [e for _, e in batch]
    check_expected(compiled, expected)
    check_expected(python, expected)


@TIMEOUT
@FUZZ
@given(data=st.data(),
       payload=mutated(valid_batch.map(batch_bytes)),
       cfg=st.sampled_from([None, None, SMALL_LIMITS]))
def test_mutated_valid_requests(twins, data, payload, cfg):
    steps = data.draw(client_script(payload))
    run_both(twins, steps, cfg=cfg)


@TIMEOUT
@FUZZ_CHEAP
@given(raw=st.one_of(st.binary(max_size=400),
                     st.tuples(st.binary(min_size=5, max_size=8), structured_garbage).map(
                         lambda t: t[0] + t[1])))
def test_flat_byte_inputs_as_atheris_decodes_them(twins, raw):
    # The decoding the atheris entry point (fuzz/fuzz_protocol.py) uses, so it cannot rot.
    steps, cfg = steps_from_bytes(raw)
    run_both(twins, steps, cfg=cfg)


SEEDS = sorted((Path(__file__).resolve().parent.parent / "fuzz" / "seeds").glob("*"))
assert SEEDS, "fuzz/seeds travels with tests/ (scripts/test_wheel.sh copies both)"


@pytest.mark.parametrize("seed", SEEDS, ids=[p.name for p in SEEDS])
def test_atheris_seeds_and_past_findings(twins, seed):
    # fuzz/seeds: the atheris corpus seeds, and inputs a long run once flagged
    # (h2c-after-pipelined-head: a HEAD answer without a length before an h2c 101, which the
    # checker read as a close-delimited body running over the 101).
    steps, cfg = steps_from_bytes(seed.read_bytes())
    run_both(twins, steps, cfg=cfg)
