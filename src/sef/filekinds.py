"""What a file holds, judged from its first bytes without unpickling or running anything.

Used where a user passed the wrong file, so the error can say what it is instead of a checkpoint.
"""

from __future__ import annotations

import os

ZIP = "zip"  # what torch.save writes (and TorchScript, and many other formats)
PICKLE = "pickle"  # a Python pickle that torch.save did not write
TORCH_LEGACY = "torch legacy"  # torch.save's legacy format: pickles, the first a magic number
EMPTY = "empty"
SAFETENSORS = "a safetensors file"
ONNX = "an ONNX model (as `sef export` writes)"
TEXT, JSON_TEXT = "a text file", "a JSON text file"
UTF16, NOT_UTF8 = "UTF-16 text", "text that is not UTF-8"  # text, but not what sef reads
HEAD = 4096  # bytes to read: enough for every test below
_SIGNATURES = (
    (b"PK\x03\x04", ZIP),
    (b"PK\x05\x06", ZIP),  # an empty zip archive
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip file"),
    (b"\xff\xfe", UTF16),  # its byte-order marks
    (b"\xfe\xff", UTF16),
)
_FRAME = 0x95  # a protocol 4+ pickle's FRAME opcode, then 8 bytes of frame length
_TORCH_MAGIC = b"\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."  # LONG1 of torch's magic number, STOP
# Bytes that no text holds (all control characters but tab, line feed, form feed, return).
_CONTROL = frozenset(range(32)) - {9, 10, 12, 13} | {127}


def _is_safetensors(head: bytes) -> bool:
    """8 bytes of little-endian header length, then the JSON header."""
    return len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 32


def _is_onnx(head: bytes) -> bool:
    """An ONNX ModelProto as its writers begin it: ir_version (field 1, a one-byte varint), then
    producer_name (field 2, a string): b"\\x08\\x0a\\x12\\x07pytorch" from torch.onnx.export."""
    return len(head) > 4 and head[0] == 0x08 and 0 < head[1] < 0x80 and head[2] == 0x12


def _text_kind(head: bytes) -> str | None:
    if _CONTROL.intersection(head):
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 3:  # not just a character cut at the end of the head
            return NOT_UTF8  # e.g. Latin-1 or Windows-1252
        text = head[: error.start].decode("utf-8")
    return JSON_TEXT if text.lstrip()[:1] in ("{", "[") else TEXT


def _pickle_kind(head: bytes) -> str:
    """TORCH_LEGACY if the pickle in ``head`` is torch's magic number, else PICKLE."""
    body = head[2:]  # after PROTO
    if body[:1] == bytes([_FRAME]):
        body = body[9:]
    return TORCH_LEGACY if body.startswith(_TORCH_MAGIC) else PICKLE


def sniff(head: bytes) -> str:
    """EMPTY, ZIP, TORCH_LEGACY, PICKLE, or a phrase naming what the bytes ``head`` look like."""
    if not head:
        return EMPTY
    for signature, kind in _SIGNATURES:
        if head.startswith(signature):
            return kind
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:  # PROTO 2..5
        return _pickle_kind(head)
    if _is_safetensors(head):
        return SAFETENSORS
    if _is_onnx(head):
        return ONNX
    return _text_kind(head) or "binary data of a kind sef does not recognise"


def sniff_file(path: str | os.PathLike) -> str:
    """:func:`sniff` of the first bytes of the file at ``path`` (OSError if it cannot be read)."""
    with open(path, "rb") as handle:
        return sniff(handle.read(HEAD))


_WORDS = {
    ZIP: "a zip archive",
    PICKLE: "a Python pickle",
    TORCH_LEGACY: "a file torch.save wrote in its legacy format",
}


def text_problem(path: str | os.PathLike) -> str | None:
    """Why the file at ``path`` cannot be a text file (a CSV, a YAML config), in words that follow
    its path ("is a folder, not a file", "is not a text file: it is a PNG image"), or None."""
    if os.path.isdir(path):
        return "is a folder, not a file"
    if not os.path.exists(path):
        return "does not exist"
    try:
        kind = sniff_file(path)
    except OSError as error:
        return f"cannot be read ({(error.strerror or str(error)).lower()})"
    if kind in (EMPTY, TEXT, JSON_TEXT, UTF16, NOT_UTF8):  # read_text names the encoding
        return None
    return f"is not a text file: it is {_WORDS.get(kind, kind)}"


def read_text(path: str | os.PathLike) -> str:
    """The UTF-8 text of the file at ``path`` (a byte-order mark dropped, line ends as they are,
    for the csv module); ValueError with words that follow the path if it is not such a file."""
    problem = text_problem(path)
    if problem:
        raise ValueError(problem)
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ValueError(
            f"is not UTF-8 text (line {line}, byte {error.start}); save it as UTF-8"
        ) from None
