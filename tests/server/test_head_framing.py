"""Request heads a proxy in front could read otherwise than h11 (issue 13, H11).

Against a real server process over raw sockets: obs-fold, bare LF, control
characters, a target not in origin form, a doubled ``Content-Length`` and
``Transfer-Encoding`` in HTTP/1.0 are refused with 400 and their reason code
before h11 parses the head, logged in the access log, and the connection is
closed; h11's own refusals get the same JSON answer (``malformed_head``). The
refused requests are correctly signed, and the very same signed request sent
well-formed afterwards is accepted: its nonce was never recorded, so the app
(and any vault behind it) never saw the refused copy.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from childvault.server._limits import head_refusal
from childvault.vault._httpsig import sign_request
from tests.server.conftest import ServerProcess, Users
from tests.server.test_limits import _connect, _read_all, _status

CRLF = "\r\n"


def _signed_whoami(server: ServerProcess, users: Users) -> requests.PreparedRequest:
    request = requests.Request(
        "POST",
        server.url + "/v1/whoami",
        data=b'{"hello": "world"}',
        headers={"Content-Type": "application/json"},
    ).prepare()
    return sign_request(request, users.alice)


def _lines(prepared: requests.PreparedRequest) -> list[str]:
    lines = [f"{prepared.method} {prepared.path_url} HTTP/1.1", "Host: 127.0.0.1"]
    return lines + [f"{k}: {v}" for k, v in prepared.headers.items()]


def _join(lines: list[str], ends: list[str] | None = None) -> bytes:
    ends = ends or [CRLF] * len(lines)
    return ("".join(line + end for line, end in zip(lines, ends, strict=True)) + CRLF).encode(
        "latin-1"
    )


def _exchange(server: ServerProcess, data: bytes) -> bytes:
    with _connect(server) as sock:
        sock.sendall(data)
        # Read until the server closes: a kept-open connection would time out here.
        return _read_all(sock)


def _body(prepared: requests.PreparedRequest) -> bytes:
    assert isinstance(prepared.body, bytes)
    return prepared.body


def _refused(server: ServerProcess, data: bytes, reason: str) -> None:
    """``data`` gets one 400 with ``reason``, is closed, and is in the access log."""
    logged = len(server.access_log())
    response = _exchange(server, data)
    assert _status(response) == 400, response[:200]
    head, _, body = response.partition(b"\r\n\r\n")
    assert json.loads(body) == {"error": "bad_request", "reason": reason}
    assert b"connection: close" in head.lower()
    # One answer only: whatever followed the head was never read as a request.
    assert response.count(b"HTTP/1.1 ") == 1
    lines = server.access_log()[logged:]
    assert any(
        line["status"] == 400 and line.get("reason") == reason and line["path"] == "-"
        for line in lines
    ), lines


def _accepted_later(server: ServerProcess, prepared: requests.PreparedRequest) -> None:
    # The same signature, nonce and body sent well-formed: a replay refusal
    # here would mean the refused copy had reached the signature layer.
    response = _exchange(
        server,
        _join(_lines(prepared)).replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
        + _body(prepared),
    )
    assert _status(response) == 200, response[:300]


HIDDEN = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def _folded(lines: list[str]) -> list[str]:
    # The Signature-Input value continued on a line starting with a space.
    out = []
    for line in lines:
        if line.lower().startswith("signature-input:"):
            cut = line.index(";")
            out += [line[:cut], " " + line[cut:]]
        else:
            out.append(line)
    return out


@pytest.mark.parametrize("fold", [" ", "\t"])
def test_obs_fold_is_refused_before_the_app(server: ServerProcess, users: Users, fold: str) -> None:
    prepared = _signed_whoami(server, users)
    lines = [
        (fold + line[1:]) if line.startswith(" ") else line for line in _folded(_lines(prepared))
    ]
    _refused(server, _join(lines) + _body(prepared) + HIDDEN, "obs_fold")
    _accepted_later(server, prepared)


@pytest.mark.parametrize("where", ["all", "request_line", "one_header", "end"])
def test_bare_lf_is_refused_before_the_app(server: ServerProcess, users: Users, where: str) -> None:
    prepared = _signed_whoami(server, users)
    lines = _lines(prepared)
    ends = [CRLF] * len(lines)
    if where == "all":
        ends = ["\n"] * len(lines)
    elif where == "request_line":
        ends[0] = "\n"
    elif where == "one_header":
        ends[2] = "\n"
    data = _join(lines, ends)
    if where == "all" or where == "end":
        data = data[:-2] + b"\n"
    _refused(server, data + _body(prepared) + HIDDEN, "bare_lf")
    _accepted_later(server, prepared)


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x0b", "\x1f", "\x7f", "\r"])
def test_control_characters_in_a_header_are_refused(
    server: ServerProcess, users: Users, char: str
) -> None:
    prepared = _signed_whoami(server, users)
    lines = [*_lines(prepared), f"X-Note: a{char}b"]
    _refused(server, _join(lines) + _body(prepared), "control_character")
    _accepted_later(server, prepared)


@pytest.mark.parametrize(
    "target", ["http://evil.example/v1/whoami", "*", "127.0.0.1:80", "v1/whoami"]
)
def test_a_target_not_in_origin_form_is_refused(server: ServerProcess, target: str) -> None:
    data = f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n".encode()
    _refused(server, data + HIDDEN, "request_target")


@pytest.mark.parametrize(
    "extra",
    [
        ["Content-Length: 18"],  # a second, equal Content-Length (h11 would merge them)
        ["content-length: 18"],
    ],
)
def test_a_doubled_content_length_is_refused(
    server: ServerProcess, users: Users, extra: list[str]
) -> None:
    prepared = _signed_whoami(server, users)
    assert prepared.headers["Content-Length"] == "18"
    _refused(server, _join(_lines(prepared) + extra) + _body(prepared), "ambiguous_framing")
    _accepted_later(server, prepared)


def test_a_content_length_list_is_refused(server: ServerProcess, users: Users) -> None:
    prepared = _signed_whoami(server, users)
    lines = [
        "Content-Length: 18, 18" if line.startswith("Content-Length:") else line
        for line in _lines(prepared)
    ]
    _refused(server, _join(lines) + _body(prepared), "ambiguous_framing")


def test_transfer_encoding_in_http_1_0_is_refused(server: ServerProcess) -> None:
    data = b"POST /v1/whoami HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    _refused(server, data, "ambiguous_framing")


@pytest.mark.parametrize(
    "head",
    [
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A : b\r\n\r\n",  # space before colon
        b"POST /health HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"GET /health HTTP/1.1 extra\r\nHost: 127.0.0.1\r\n\r\n",  # a bad request line
    ],
)
# No Host or two are refused before h11 now, as ``host`` (tests/server/test_host_header.py).
def test_h11_refusals_answer_in_the_server_format(server: ServerProcess, head: bytes) -> None:
    _refused(server, head + HIDDEN, "malformed_head")


def test_a_bad_head_split_over_sends_is_refused(server: ServerProcess, users: Users) -> None:
    # The fold arrives in a second send: h11 holds the first part, and the
    # check must read it together with the rest.
    prepared = _signed_whoami(server, users)
    data = _join(_folded(_lines(prepared))) + _body(prepared)
    # Cut just before the folded line: the second part alone has no "\n " in it.
    cut = data.index(b"\r\n ") + 2
    logged = len(server.access_log())
    with _connect(server) as sock:
        sock.sendall(data[:cut])
        # A pause so that the server reads the parts separately (not a timing
        # assertion; the head timeout of 2 s is far off).
        time.sleep(0.3)
        sock.sendall(data[cut:] + HIDDEN)
        response = _read_all(sock)
    assert _status(response) == 400
    assert response.endswith(b'"reason":"obs_fold"}')
    assert response.count(b"HTTP/1.1 ") == 1
    assert any(line.get("reason") == "obs_fold" for line in server.access_log()[logged:])
    _accepted_later(server, prepared)


def test_a_bad_pipelined_head_is_refused_after_the_good_answer(server: ServerProcess) -> None:
    # Sent in one go behind a good request: h11 holds it until the first
    # answer is out, then it is checked before h11 parses it.
    good = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    bad = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: b\r\n c\r\n\r\n"
    response = _exchange(server, good + bad + HIDDEN)
    first, second = response.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"200 ") and first.endswith(b'{"status":"ok"}')
    assert second.startswith(b"400 ") and second.endswith(b'"reason":"obs_fold"}')


def test_well_formed_requests_still_work_on_the_same_connection(
    server: ServerProcess, users: Users
) -> None:
    prepared = _signed_whoami(server, users)
    # A tab inside a value and bytes above 0x7f (obs-text) are allowed (RFC 9110 5.5).
    lines = [*_lines(prepared), "X-Note: a\tb", "X-Latin: caf\xe9"]
    with _connect(server) as sock:
        sock.sendall(_join(lines) + _body(prepared))
        answer = b""
        while b'"user":"alice"' not in answer:
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
        assert _status(answer) == 200
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert _read_all(sock).endswith(b'{"status":"ok"}')


# Header blocks: names are tokens, values visible ASCII with inner spaces or tabs.
_NAMES = st.from_regex(r"X-[A-Za-z0-9-]{1,12}", fullmatch=True)
_VALUES = st.from_regex(r"[!-~]([!-~ \t]{0,20}[!-~])?", fullmatch=True)
_FIELDS = st.lists(st.tuples(_NAMES, _VALUES), max_size=8)


@st.composite
def _blocks(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A header block and whether it has obs-fold or a bare LF."""
    fields = draw(_FIELDS)
    lines = ["GET /health HTTP/1.1", "Host: 127.0.0.1"] + [f"{n}: {v}" for n, v in fields]
    ends = [draw(st.sampled_from([CRLF, CRLF, "\n"])) for _ in lines]
    folds = [draw(st.sampled_from(["", "", "", " x", "\tx"])) for _ in lines[1:]]
    text = lines[0] + ends[0]
    for line, end, fold in zip(lines[1:], ends[1:], folds, strict=True):
        text += line + end + (fold + end if fold else "")
    final = draw(st.sampled_from([CRLF, CRLF, "\n"]))
    bad = "\n" in ends or final == "\n" or any(folds)
    return (text + final).encode("latin-1"), bad


@given(_blocks())
def test_head_refusal_refuses_exactly_obs_fold_and_bare_lf(block: tuple[bytes, bool]) -> None:
    head, bad = block
    assert (head_refusal(head) in ("obs_fold", "bare_lf")) is bad
    if not bad:
        assert head_refusal(head) is None


@settings(max_examples=60)
@given(_blocks())
def test_the_server_refuses_exactly_obs_fold_and_bare_lf(
    server: ServerProcess, block: tuple[bytes, bool]
) -> None:
    head, bad = block
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head[: -len(b"\r\n")] + b"Connection: close\r\n\r\n" if not bad else head)
        response = _read_all(sock)
    if bad:
        assert _status(response) == 400
        assert json.loads(response.partition(b"\r\n\r\n")[2])["reason"] in ("obs_fold", "bare_lf")
    else:
        assert _status(response) == 200
        assert response.endswith(b'{"status":"ok"}')
