"""Tests of vault._note: signed-note / tlog-checkpoint format, vectors and hostile input."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable

import nacl.signing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from childvault.keys._errors import IntegrityError, UsageError
from childvault.vault._merkle import EMPTY_ROOT, leaf_hash, root_of
from childvault.vault._note import (
    MAX_NOTE_BYTES,
    MAX_SIGNATURES,
    Checkpoint,
    NoteSignature,
    add_signature,
    key_id,
    open_note,
    parse_note,
    parse_vkey,
    sign_note,
    verify_note,
    vkey,
)

EM = "\u2014"

# --- published vectors ----------------------------------------------------------------
# golang.org/x/mod/sumdb/note, note_test.go (TestNewVerifier, TestSign, TestOpen):
# the PeterNeumann / EnochRoot keys, the signer seed and the signed note.

PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    f"{EM} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNX"
    "gKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    f"{EM} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTG"
    "wnWLox33WWd1RvMc+QQ=\n"
)

# sigsum/sigsum-go, pkg/checkpoint/checkpoint_test.go (TestGoSumDBCheckpoint):
# a real sum.golang.org checkpoint "retrieved from https://sum.golang.org/latest,
# 2024-09-23", and the sum.golang.org verifier key built into the go command
# (src/cmd/go/internal/modfetch/key.go).
SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_CHECKPOINT = (
    "go.sum database tree\n"
    "30055305\n"
    "mXfgRcJ0bG0j3CPdKwgGWtUzBUbX67saZGRmFuJGGsM=\n"
    "\n"
    f"{EM} sum.golang.org Az3grpgEild5qw7+5dtV13Kf1C2Xurm8q4fhdxvcsDHnqNTaxL2AFjBY+2TyGKevu"
    "cFcAAlWFJJYle3EJlDCrQ+y3A8=\n"
)


def peter_signing_key() -> nacl.signing.SigningKey:
    raw = base64.b64decode(PETER_SKEY.split("+", 4)[4])
    assert raw[0] == 0x01
    return nacl.signing.SigningKey(raw[1:])


def test_vkey_vectors_parse_and_reproduce() -> None:
    for text, name, kid in (
        (PETER_VKEY, "PeterNeumann", "c74f20a3"),
        (ENOCH_VKEY, "EnochRoot", "af0cfe78"),
        (SUMDB_VKEY, "sum.golang.org", "033de0ae"),
    ):
        parsed_name, public_key = parse_vkey(text)
        assert parsed_name == name
        assert len(public_key) == 32
        assert key_id(name, public_key).hex() == kid
        assert vkey(name, public_key) == text


def test_peter_private_key_matches_vkey() -> None:
    sk = peter_signing_key()
    assert vkey("PeterNeumann", bytes(sk.verify_key)) == PETER_VKEY


def test_sign_reproduces_go_output_byte_for_byte() -> None:
    sk = peter_signing_key()
    note = sign_note(
        GO_TEXT.encode(), "PeterNeumann", lambda m: sk.sign(m).signature, bytes(sk.verify_key)
    )
    assert note == GO_TEXT + "\n" + PETER_SIG


def test_go_open_vectors() -> None:
    _, peter = parse_vkey(PETER_VKEY)
    _, enoch = parse_vkey(ENOCH_VKEY)
    note = GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG
    body, names = open_note(note, {"PeterNeumann": peter})
    assert body == GO_TEXT.encode()
    assert names == ["PeterNeumann"]
    body, names = open_note(note, {"PeterNeumann": peter, "EnochRoot": enoch})
    assert names == ["PeterNeumann", "EnochRoot"]
    _, names = open_note(GO_TEXT + "\n" + ENOCH_SIG, {"EnochRoot": enoch})
    assert names == ["EnochRoot"]
    with pytest.raises(IntegrityError, match="not signed by any known key"):
        open_note(note, {})
    # Duplicated signatures are fine; the name is reported once.
    _, names = open_note(
        GO_TEXT + "\n" + PETER_SIG + PETER_SIG + ENOCH_SIG, {"PeterNeumann": peter}
    )
    assert names == ["PeterNeumann"]
    # The parsed signature lines.
    _, sigs = parse_note(note)
    assert [(s.name, s.key_id.hex(), len(s.signature)) for s in sigs] == [
        ("PeterNeumann", "c74f20a3", 64),
        ("EnochRoot", "af0cfe78", 64),
    ]
    # The Go note is not a checkpoint: verify_note authenticates, then refuses it.
    with pytest.raises(IntegrityError, match="checkpoint"):
        verify_note(note, {"PeterNeumann": peter})


def test_go_open_rejections() -> None:
    _, peter = parse_vkey(PETER_VKEY)
    known = {"PeterNeumann": peter}
    # Too many signatures.
    with pytest.raises(IntegrityError, match="too many"):
        parse_note(GO_TEXT + "\n" + PETER_SIG * 101)
    # An invalid signature by a known key.
    bad = PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises(IntegrityError):
        open_note(GO_TEXT + "\n" + bad, known)
    # Go's badMsgs list.
    for msg in (
        GO_TEXT,
        GO_TEXT + "\n",
        GO_TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + GO_TEXT + "\n" + PETER_SIG,
        "\udcff" + GO_TEXT + "\n" + PETER_SIG,  # stands for Go's invalid byte 0xff
        GO_TEXT
        + "\n"
        + f"{EM} Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqf"
        "qdngotpRZb6KE6RyyBwJnAM=",
        GO_TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
    ):
        with pytest.raises(IntegrityError):
            open_note(msg, known)
    # A known name with another key id, or another name with the key id: ignored.
    misnamed = PETER_SIG.replace("PeterNeumann", "CarmenSandiego")
    with pytest.raises(IntegrityError, match="not signed by any known key"):
        open_note(GO_TEXT + "\n" + misnamed, known)


def test_go_verifier_manglings_rejected() -> None:
    # TestNewVerifier: every proper substring and every single-byte increment fails.
    b = PETER_VKEY
    for i in range(len(b) + 1):
        for j in range(i + 1, len(b) + 1):
            if (i, j) != (0, len(b)):
                with pytest.raises(IntegrityError):
                    parse_vkey(b[i:j])
    for i in range(len(b)):
        with pytest.raises(IntegrityError):
            parse_vkey(b[:i] + chr(ord(b[i]) + 1) + b[i + 1 :])
    for bad in (
        # wrong length key, with adjusted key hash
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        # unknown algorithm, with adjusted key hash
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "",
        "+" * 10,
        "a+b+c",
    ):
        with pytest.raises(IntegrityError):
            parse_vkey(bad)


def test_sumdb_checkpoint_verifies() -> None:
    name, public_key = parse_vkey(SUMDB_VKEY)
    checkpoint, names = verify_note(SUMDB_CHECKPOINT, {name: public_key})
    assert names == ["sum.golang.org"]
    assert checkpoint.origin == "go.sum database tree"
    assert checkpoint.size == 30055305
    assert checkpoint.root == base64.b64decode("mXfgRcJ0bG0j3CPdKwgGWtUzBUbX67saZGRmFuJGGsM=")
    assert checkpoint.extensions == ()
    body, _ = parse_note(SUMDB_CHECKPOINT)
    assert checkpoint.body() == body
    # One changed digit of the size, or another key, and it fails.
    with pytest.raises(IntegrityError):
        verify_note(SUMDB_CHECKPOINT.replace("30055305", "30055306"), {name: public_key})
    with pytest.raises(IntegrityError):
        verify_note(SUMDB_CHECKPOINT, {"PeterNeumann": parse_vkey(PETER_VKEY)[1]})


# --- our own keys ---------------------------------------------------------------------


class Signer:
    """A test signer: name, key pair, and the callback sign_note wants."""

    def __init__(self, name: str, seed: int) -> None:
        self.name = name
        self.key = nacl.signing.SigningKey(bytes([seed]) * 32)
        self.public = bytes(self.key.verify_key)

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message).signature


OFFICER = Signer("childvault.example/officer-ann", 1)
WITNESS = Signer("childvault.example/transit", 2)
STRANGER = Signer("stranger.example", 3)
ROOT = root_of([leaf_hash(b"entry %d" % i) for i in range(5)])
CP = Checkpoint("childvault/0f3a", 5, ROOT)


def signed(cp: Checkpoint = CP, signer: Signer = OFFICER) -> str:
    return sign_note(cp.body(), signer.name, signer.sign, signer.public)


def test_checkpoint_body_format() -> None:
    assert CP.body() == (b"childvault/0f3a\n5\n" + base64.b64encode(ROOT) + b"\n")
    with_ext = Checkpoint("o", 0, EMPTY_ROOT, ("ext one", "ext two"))
    assert with_ext.body() == (
        b"o\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\next one\next two\n"
    )
    for cp in (CP, with_ext, Checkpoint("go.sum database tree", 2**64 - 1, ROOT)):
        assert Checkpoint.parse_body(cp.body()) == cp


def test_checkpoint_constructor_rejects_bad_fields() -> None:
    for args in (
        ("", 1, ROOT),
        ("a\nb", 1, ROOT),
        ("a\tb", 1, ROOT),
        ("o", -1, ROOT),
        ("o", 2**64, ROOT),
        ("o", True, ROOT),
        ("o", 1, ROOT[:31]),
        ("o", 1, "x" * 32),
    ):
        with pytest.raises(UsageError):
            Checkpoint(*args)
    with pytest.raises(UsageError):
        Checkpoint("o", 1, ROOT, ("",))
    with pytest.raises(UsageError):
        Checkpoint("o", 1, ROOT, ("a\nb",))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"o\n1\n",
        b"o\n1",
        b"o\n1\n" + base64.b64encode(ROOT),  # no final newline
        b"o\n01\n" + base64.b64encode(ROOT) + b"\n",  # leading zero
        b"o\n00\n" + base64.b64encode(ROOT) + b"\n",
        b"o\n-1\n" + base64.b64encode(ROOT) + b"\n",
        b"o\n+1\n" + base64.b64encode(ROOT) + b"\n",
        b"o\n 1\n" + base64.b64encode(ROOT) + b"\n",
        b"o\n1 \n" + base64.b64encode(ROOT) + b"\n",
        b"o\n1_0\n" + base64.b64encode(ROOT) + b"\n",
        "o\n\u0661\n".encode() + base64.b64encode(ROOT) + b"\n",  # Arabic-Indic one
        b"o\n18446744073709551616\n" + base64.b64encode(ROOT) + b"\n",  # 2**64
        b"o\n123456789012345678901\n" + base64.b64encode(ROOT) + b"\n",
        b"o\n1\n" + base64.b64encode(ROOT[:31]) + b"\n",
        b"o\n1\n" + base64.b64encode(ROOT + b"x") + b"\n",
        b"o\n1\n" + base64.b64encode(ROOT).rstrip(b"=") + b"\n",  # unpadded
        b"o\n1\n" + base64.urlsafe_b64encode(b"\xff" * 32) + b"\n",  # URL alphabet
        b"o\n1\n" + base64.b64encode(bytes(32))[:-2] + b"B=\n",  # non-canonical last bits
        b"o\n1\n" + base64.b64encode(ROOT) + b"\n\n",  # empty extension line
        b"\n1\n" + base64.b64encode(ROOT) + b"\n",  # empty origin
        b"o\r\n1\n" + base64.b64encode(ROOT) + b"\n",
        b"o\x00\n1\n" + base64.b64encode(ROOT) + b"\n",
        b"o\x1b[31m\n1\n" + base64.b64encode(ROOT) + b"\n",
        b"\xff\n1\n" + base64.b64encode(ROOT) + b"\n",
        b"o\n1\n" + base64.b64encode(ROOT) + b"\nx\x7f\x00\n",
    ],
)
def test_checkpoint_parse_rejects(body: bytes) -> None:
    with pytest.raises(IntegrityError):
        Checkpoint.parse_body(body)


def test_checkpoint_parse_rejects_non_bytes_and_huge() -> None:
    with pytest.raises(IntegrityError):
        Checkpoint.parse_body("o\n1\n")  # type: ignore[arg-type]
    with pytest.raises(IntegrityError, match="too large"):
        Checkpoint.parse_body(b"o\n1\n" + base64.b64encode(ROOT) + b"\n" + b"x\n" * MAX_NOTE_BYTES)


def test_sign_and_verify_roundtrip() -> None:
    note = signed()
    assert note.startswith(CP.body().decode() + "\n" + EM + " " + OFFICER.name + " ")
    checkpoint, names = verify_note(note, {OFFICER.name: OFFICER.public})
    assert checkpoint == CP
    assert names == [OFFICER.name]
    body, sigs = parse_note(note)
    assert body == CP.body()
    assert sigs == [
        NoteSignature(OFFICER.name, key_id(OFFICER.name, OFFICER.public), sigs[0].signature)
    ]
    assert OFFICER.key.verify_key.verify(body, sigs[0].signature) == body


def test_cosign() -> None:
    note = add_signature(signed(), WITNESS.name, WITNESS.sign, WITNESS.public)
    known = {OFFICER.name: OFFICER.public, WITNESS.name: WITNESS.public}
    assert verify_note(note, known)[1] == [OFFICER.name, WITNESS.name]
    assert verify_note(note, {WITNESS.name: WITNESS.public})[1] == [WITNESS.name]
    assert verify_note(note, {OFFICER.name: OFFICER.public})[1] == [OFFICER.name]
    # Cosigning again with the same key replaces, not duplicates, its line.
    again = add_signature(note, WITNESS.name, WITNESS.sign, WITNESS.public)
    assert again == note  # Ed25519 is deterministic
    assert len(parse_note(again)[1]) == 2
    # A stranger's signature is ignored, but alone it verifies nothing.
    three = add_signature(note, STRANGER.name, STRANGER.sign, STRANGER.public)
    assert verify_note(three, known)[1] == [OFFICER.name, WITNESS.name]
    with pytest.raises(IntegrityError, match="not signed by any known key"):
        verify_note(signed(signer=STRANGER), known)


def test_unknown_and_mismatched_keys() -> None:
    note = signed()
    # Same name, other key (so other key id): ignored, hence unverified.
    with pytest.raises(IntegrityError, match="not signed by any known key"):
        verify_note(note, {OFFICER.name: STRANGER.public})
    # Known key under another name: ignored too.
    with pytest.raises(IntegrityError, match="not signed by any known key"):
        verify_note(note, {"someone-else": OFFICER.public})
    # Known name and key id but a wrong signature: the whole note is rejected,
    # even though another known key signed it correctly.
    body, sigs = parse_note(note)
    forged = (
        f"{EM} {WITNESS.name} "
        + base64.b64encode(key_id(WITNESS.name, WITNESS.public) + bytes(64)).decode()
        + "\n"
    )
    with pytest.raises(IntegrityError, match="invalid signature"):
        verify_note(note + forged, {OFFICER.name: OFFICER.public, WITNESS.name: WITNESS.public})
    # A signature of the wrong length by a known key is invalid, not ignored.
    short = f"{EM} {OFFICER.name} " + base64.b64encode(sigs[0].key_id + b"x").decode() + "\n"
    with pytest.raises(IntegrityError, match="invalid signature"):
        verify_note(body.decode() + "\n" + short, {OFFICER.name: OFFICER.public})


def test_known_keys_must_be_well_formed() -> None:
    with pytest.raises(IntegrityError):
        verify_note(signed(), {OFFICER.name: OFFICER.public[:31]})
    with pytest.raises(IntegrityError):
        verify_note(signed(), {"bad name": OFFICER.public})


def test_sign_rejects_bad_arguments() -> None:
    body = CP.body()
    with pytest.raises(UsageError):
        sign_note(body, "has space", OFFICER.sign, OFFICER.public)
    with pytest.raises(UsageError):
        sign_note(body, "a+b", OFFICER.sign, OFFICER.public)
    with pytest.raises(UsageError):
        sign_note(body, "", OFFICER.sign, OFFICER.public)
    with pytest.raises(UsageError):
        sign_note(body[:-1], OFFICER.name, OFFICER.sign, OFFICER.public)
    with pytest.raises(UsageError):
        sign_note(b"a\x00\n", OFFICER.name, OFFICER.sign, OFFICER.public)
    with pytest.raises(UsageError):
        sign_note(b"\xff\n", OFFICER.name, OFFICER.sign, OFFICER.public)
    with pytest.raises(UsageError):
        sign_note(body, OFFICER.name, OFFICER.sign, OFFICER.public[:16])
    with pytest.raises(UsageError):
        key_id("x y", OFFICER.public)
    with pytest.raises(UsageError):
        vkey("ok", b"short")


def test_sign_checks_the_signature() -> None:
    # A signer holding another key (a misconfigured Transit key, say).
    bad_signers: list[Callable[[bytes], bytes]] = [
        STRANGER.sign,
        lambda m: bytes(64),
        lambda m: OFFICER.sign(m)[:63],
        lambda m: OFFICER.sign(m + b"x"),
    ]
    for bad in bad_signers:
        with pytest.raises(IntegrityError):
            sign_note(CP.body(), OFFICER.name, bad, OFFICER.public)
        with pytest.raises(IntegrityError):
            add_signature(signed(), OFFICER.name, bad, OFFICER.public)


def test_note_limits() -> None:
    note = signed()
    body, _ = parse_note(note)
    line = note[len(body) + 1 :]
    ok = body.decode() + "\n" + line * MAX_SIGNATURES
    assert len(parse_note(ok)[1]) == MAX_SIGNATURES
    assert verify_note(ok, {OFFICER.name: OFFICER.public})[1] == [OFFICER.name]
    with pytest.raises(IntegrityError, match="too many"):
        parse_note(ok + line)
    with pytest.raises(IntegrityError, match="maximum"):
        add_signature(ok, WITNESS.name, WITNESS.sign, WITNESS.public)
    big = "x" * (MAX_NOTE_BYTES - 10) + "\n\n" + line
    with pytest.raises(IntegrityError, match="too large"):
        parse_note(big)
    # Multi-byte characters count by UTF-8 size, not by characters.
    wide = "\u00e9" * (MAX_NOTE_BYTES // 2) + "\n\n" + line
    with pytest.raises(IntegrityError, match="too large"):
        parse_note(wide)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda n: n.replace(EM, "-"),
        lambda n: n.replace(EM + " ", EM),
        lambda n: n.replace("\n\n", "\n \n"),
        lambda n: n.replace("\n\n", "\n"),
        lambda n: n[:-1],
        lambda n: n + "\n",
        lambda n: n + EM + " \n",
        lambda n: n + EM + " name\n",
        lambda n: n + EM + " name \n",
        lambda n: n + EM + " name AAAA\n",  # only 3 bytes: no room for a key id + signature
        lambda n: n + EM + " name AAAAAA==\n",
        lambda n: n + EM + " name AAAAAAA\n",  # unpadded
        lambda n: n + EM + " name  AAAAAAA=\n",
        lambda n: n + EM + " na+me AAAAAAA=\n",
        lambda n: n + EM + " na\u00a0me AAAAAAA=\n",
        lambda n: n.replace("\n", "\r\n"),
        lambda n: n.replace("=\n", "=\t\n"),
    ],
)
def test_parse_note_rejects(mutate: Callable[[str], str]) -> None:
    with pytest.raises(IntegrityError):
        verify_note(mutate(signed()), {OFFICER.name: OFFICER.public})


def test_parse_note_accepts_minimal_unknown_signature() -> None:
    # Five bytes (key id + one byte) is the smallest well-formed signature;
    # it is simply ignored when its key is unknown.
    note = signed() + f"{EM} other.example AAAAAAA=\n"
    assert parse_note(note)[1][-1] == NoteSignature("other.example", bytes(4), b"\x00")
    assert verify_note(note, {OFFICER.name: OFFICER.public})[1] == [OFFICER.name]


def test_verify_note_refuses_signed_non_checkpoint() -> None:
    note = sign_note(b"just text\n", OFFICER.name, OFFICER.sign, OFFICER.public)
    assert open_note(note, {OFFICER.name: OFFICER.public}) == (b"just text\n", [OFFICER.name])
    with pytest.raises(IntegrityError, match="checkpoint"):
        verify_note(note, {OFFICER.name: OFFICER.public})


# --- hostile input: only IntegrityError, and every mutation fails ---------------------

KNOWN = {OFFICER.name: OFFICER.public, WITNESS.name: WITNESS.public}
VALID = signed()
COSIGNED = add_signature(VALID, WITNESS.name, WITNESS.sign, WITNESS.public)
# Characters that matter to the format, plus anything at all (lone surrogates too).
note_chars = st.one_of(
    st.sampled_from(["\n", " ", EM, "+", "=", "/", "A", "0", "\x00", "\r", "\u00a0", "\udc80"]),
    st.characters(),
)


def expect_only_integrity_error(fn: Callable[[], object]) -> None:
    with contextlib.suppress(IntegrityError):
        fn()


@given(st.text(max_size=300))
def test_arbitrary_text_raises_only_integrity_error(text: str) -> None:
    expect_only_integrity_error(lambda: parse_note(text))
    expect_only_integrity_error(lambda: verify_note(text, KNOWN))
    expect_only_integrity_error(lambda: parse_vkey(text))


@given(st.binary(max_size=300))
def test_arbitrary_bytes_body_raises_only_integrity_error(body: bytes) -> None:
    expect_only_integrity_error(lambda: Checkpoint.parse_body(body))


@given(st.lists(st.one_of(st.text(max_size=30), st.integers().map(str)), min_size=0, max_size=6))
def test_arbitrary_lines_body(lines: list[str]) -> None:
    body = "".join(line + "\n" for line in lines)
    try:
        cp = Checkpoint.parse_body(body.encode("utf-8", "surrogatepass"))
    except IntegrityError:
        return
    assert cp.body() == body.encode()


@st.composite
def mutations(draw: st.DrawFn, note: str) -> str:
    """Apply 1-4 random character substitutions, insertions or deletions anywhere."""
    text = note
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["sub", "ins", "del"]))
        if kind == "ins":
            text = text[:pos] + draw(note_chars) + text[pos:]
        elif pos < len(text):
            repl = "" if kind == "del" else draw(note_chars)
            text = text[:pos] + repl + text[pos + 1 :]
    return text


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(mutations(COSIGNED))
def test_random_mutations_raise_only_integrity_error(text: str) -> None:
    expect_only_integrity_error(lambda: parse_note(text))
    expect_only_integrity_error(lambda: verify_note(text, KNOWN))
    expect_only_integrity_error(lambda: parse_vkey(text))
    expect_only_integrity_error(
        lambda: add_signature(text, WITNESS.name, WITNESS.sign, WITNESS.public)
    )


def mutate_once(data: st.DataObject, note: str, lo: int, hi: int) -> str | None:
    """Substitute, insert or delete one character at a position in [lo, hi).

    ``hi`` may be ``len(note) + 1`` to allow appending a character.
    """
    pos = data.draw(st.integers(lo, hi - 1))
    kind = data.draw(st.sampled_from(["sub", "ins", "del"]))
    if kind != "ins" and pos >= len(note):
        return None
    if kind == "del":
        return note[:pos] + note[pos + 1 :]
    ch = data.draw(note_chars)
    if kind == "ins":
        return note[:pos] + ch + note[pos:]
    if ch == note[pos]:
        return None
    return note[:pos] + ch + note[pos + 1 :]


@settings(max_examples=500)
@given(st.data())
def test_any_single_mutation_of_a_signed_note_fails(data: st.DataObject) -> None:
    # Anywhere in a note with one signature: body, separator, signature line.
    mutated = mutate_once(data, VALID, 0, len(VALID) + 1)
    if mutated is not None:
        with pytest.raises(IntegrityError):
            verify_note(mutated, {OFFICER.name: OFFICER.public})


@settings(max_examples=300)
@given(st.data())
def test_any_single_mutation_of_a_cosigned_body_fails(data: st.DataObject) -> None:
    # In a cosigned note every body change fails. (A mutated *name* in one
    # signature line turns it into an unknown key's signature, which the spec
    # says to ignore, so the other signature alone still verifies.)
    body, _ = parse_note(COSIGNED)
    mutated = mutate_once(data, COSIGNED, 0, len(body))
    if mutated is not None:
        with pytest.raises(IntegrityError):
            verify_note(mutated, KNOWN)


@settings(max_examples=300)
@given(st.data())
def test_any_single_mutation_of_cosigned_signature_bytes_fails(data: st.DataObject) -> None:
    # Flipping any bit of either known signature fails the whole note, even
    # though the other signature is still good. (Only the signature bytes are
    # flipped: a changed key id would make the line an unknown key's, ignored.)
    _, sigs = parse_note(COSIGNED)
    which = data.draw(st.integers(0, 1))
    sig = sigs[which]
    raw = bytearray(sig.key_id + sig.signature)
    i = data.draw(st.integers(4, len(raw) - 1))
    raw[i] ^= 1 << data.draw(st.integers(0, 7))
    old = base64.b64encode(sig.key_id + sig.signature).decode()
    mutated = COSIGNED.replace(old, base64.b64encode(bytes(raw)).decode())
    with pytest.raises(IntegrityError, match="invalid signature"):
        verify_note(mutated, KNOWN)


def test_every_signature_character_matters() -> None:
    # Exhaustively: replacing any one character of the signature line fails.
    body, _ = parse_note(VALID)
    start = len(body) + 1
    for pos in range(start, len(VALID)):
        for ch in ("A", "B", "/", "+", " "):
            if VALID[pos] == ch:
                continue
            mutated = VALID[:pos] + ch + VALID[pos + 1 :]
            with pytest.raises(IntegrityError):
                verify_note(mutated, {OFFICER.name: OFFICER.public})


# --- remembered verifications (issue 13, round 2 session 11) ---------------------------


def _signed(name: str, size: int, *extensions: str) -> tuple[str, bytes, nacl.signing.SigningKey]:
    sk = nacl.signing.SigningKey.generate()
    pk = bytes(sk.verify_key)
    body = Checkpoint("example.org/log", size, b"\x07" * 32, extensions).body()
    return sign_note(body, name, lambda m: sk.sign(m).signature, pk), pk, sk


def test_a_remembered_success_answers_only_the_same_text_and_keys() -> None:
    from childvault.vault import _note

    note, pk, _ = _signed("alice", 3)
    other = bytes(nacl.signing.SigningKey.generate().verify_key)
    first = open_note(note, {"alice": pk})
    assert open_note(note, {"alice": pk}) == first  # remembered: the same answer
    assert (note, frozenset({("alice", pk)})) in _note._VERIFIED
    # Another key set is not answered from memory: a wrong key still fails...
    with pytest.raises(IntegrityError, match="not signed by any known key"):
        open_note(note, {"alice": other})
    # ... and one more known signer is checked too.
    assert open_note(note, {"alice": pk, "bob": other})[1] == ["alice"]
    # A tampered copy is another text: verified afresh, refused every time.
    bad = note.replace("\n3\n", "\n4\n")
    for _ in range(2):
        with pytest.raises(IntegrityError, match="invalid signature"):
            open_note(bad, {"alice": pk})
    assert not any(key[0] == bad for key in _note._VERIFIED)
    # A malformed key set is refused whether or not the note was seen before.
    with pytest.raises(IntegrityError, match="malformed"):
        open_note(note, {"alice": pk[:31]})
    with pytest.raises(IntegrityError, match="malformed"):
        open_note(note, {"alice": bytearray(pk)})  # type: ignore[dict-item]


def test_remembered_verifications_are_bounded() -> None:
    from childvault.vault import _note

    _note._VERIFIED.clear()
    _, pk, sk = _signed("alice", 1)
    for size in range(_note._VERIFIED_MAX + 5):
        body = Checkpoint("example.org/log", size, b"\x07" * 32).body()
        text = sign_note(body, "alice", lambda m: sk.sign(m).signature, pk)
        open_note(text, {"alice": pk})
    assert len(_note._VERIFIED) == _note._VERIFIED_MAX


def test_an_approval_leaves_out_only_small_notes_without_a_restore_line() -> None:
    """``effective_witness(..., since=)``: a restore note of a small tree is still
    read and still retires the larger notes before it."""
    from childvault.vault._svc_audit import RESTORE_EXTENSION, effective_witness

    sk = nacl.signing.SigningKey.generate()
    pk = bytes(sk.verify_key)

    def note(size: int, *extensions: str) -> str:
        body = Checkpoint("example.org/log", size, bytes([size]) * 32, extensions).body()
        return sign_note(body, "alice", lambda m: sk.sign(m).signature, pk)

    small, lost, restore, later = (
        note(2),
        note(9),
        note(3, f"{RESTORE_EXTENSION} witnessed entries 3 to 8 lost"),
        note(6),
    )
    notes = [small, lost, restore, later]
    signers = {"alice": pk}
    assert effective_witness(notes, signers, "example.org/log") == [small, restore, later]
    assert effective_witness(notes, signers, "example.org/log", since=5) == [restore, later]
    # Without the restore note the lost one would still bind (and fail) the check.
    assert effective_witness([small, lost, later], signers, "example.org/log", since=5) == [
        lost,
        later,
    ]
    # A note that does not parse is kept, whatever its claim: verification names it.
    assert effective_witness(["junk", later], signers, "example.org/log", since=5) == [
        "junk",
        later,
    ]
