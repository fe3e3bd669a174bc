"""CloudTrail log files read incrementally: `{"Records": [ … ]}`, gzip or plain, fed in
chunks and yielded record by record, so memory stays bounded whatever the file's size.

What is held at once: one chunk of input, at most `MAX_EXPANSION` bytes of its
decompressed output (a small file that inflates enormously is read piece by piece too),
and the record being parsed — a record larger than `max_record` characters is refused
rather than buffered.
"""

from __future__ import annotations

import codecs
import json
import re
import zlib
from collections.abc import Iterable, Iterator
from enum import Enum, auto
from typing import Any

from elevate_audit_ingest.schemas import LogFileError

MAX_EXPANSION = 1 << 20  # decompressed bytes produced per step
MAX_RECORD = 8 << 20  # characters: CloudTrail records are at most a few hundred KB
_WHITESPACE = " \t\r\n"
_NUMBER_GOES_ON = frozenset("0123456789.eE+-")
_NON_WHITESPACE = re.compile(r"[^ \t\r\n]")
_DECODER = json.JSONDecoder()


class _State(Enum):
    START = auto()  # expect "{"
    FIRST_KEY = auto()  # expect a key or "}"
    KEY = auto()  # after ",": expect a key
    COLON = auto()
    VALUE = auto()  # the value of a key other than Records: skipped
    RECORDS = auto()  # expect "["
    FIRST_ITEM = auto()  # expect a record or "]"
    ITEM = auto()  # after ",": expect a record
    AFTER_ITEM = auto()  # expect "," or "]"
    AFTER_VALUE = auto()  # expect "," or "}"
    DONE = auto()


class _NeedMoreError(Exception):
    """The buffer ends inside the next token: feed more input."""


class _Inflater:
    """gzip (every member) or plain bytes, decided by the first two bytes."""

    def __init__(self) -> None:
        self._head = b""
        self._gzip: bool | None = None
        self._z: Any = None

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._gzip is None:
            self._head += data
            if len(self._head) < 2 and data:
                return
            self._gzip = self._head[:2] == b"\x1f\x8b"
            data, self._head = self._head, b""
        if not self._gzip:
            if data:
                yield data
            return
        try:
            yield from self._inflate(data)
        except zlib.error as exc:
            raise LogFileError(f"gzip: {exc}") from None

    def _inflate(self, data: bytes) -> Iterator[bytes]:
        while data:
            if self._z is None:
                self._z = zlib.decompressobj(wbits=31)
            out = self._z.decompress(data, MAX_EXPANSION)
            if out:
                yield out
            if self._z.eof:  # the next gzip member, if any, begins in unused_data
                data, self._z = self._z.unused_data, None
            else:
                data = self._z.unconsumed_tail

    def close(self) -> None:
        if self._gzip and (self._z is not None or self._head):
            raise LogFileError("gzip: the file ends inside a compressed stream")


class LogFileReader:
    """Feed bytes with `feed` (an empty chunk = end of file); records come out in order.
    Raises LogFileError when the input is not a CloudTrail log file — records yielded
    before the fault were well-formed."""

    def __init__(self, *, max_record: int = MAX_RECORD) -> None:
        self.max_record = max_record
        self.records = 0
        self._inflater = _Inflater()
        self._text = codecs.getincrementaldecoder("utf-8")()
        self._buf = ""
        self._pos = 0
        self._state = _State.START
        self._key: str | None = None
        self._seen_records = False

    def feed(self, chunk: bytes) -> Iterator[dict[str, Any]]:
        end = not chunk
        for data in self._inflater.feed(chunk):
            yield from self._parse(self._decode(data), end=False)
        if end:
            self._inflater.close()
            yield from self._parse(self._decode(b"", final=True), end=True)
            self._finish()

    def _decode(self, data: bytes, *, final: bool = False) -> str:
        try:
            return self._text.decode(data, final)
        except UnicodeDecodeError as exc:
            raise LogFileError(f"log file is not UTF-8: {exc}") from None

    def _parse(self, text: str, *, end: bool) -> Iterator[dict[str, Any]]:
        # Drop what is parsed before appending: the buffer holds at most one token + text.
        self._buf = self._buf[self._pos :] + text
        self._pos = 0
        while self._state is not _State.DONE:
            try:
                record = self._step(end=end)
            except _NeedMoreError:
                if len(self._buf) - self._pos > self.max_record:
                    raise LogFileError(
                        f"a value in the log file exceeds {self.max_record} characters"
                    ) from None
                return
            if record is not None:
                self.records += 1
                yield record
        self._expect_only_whitespace()

    def _finish(self) -> None:
        if self._state is not _State.DONE:
            raise LogFileError("log file ends before its end (truncated)")
        if not self._seen_records:
            raise LogFileError('log file has no "Records" list')

    def _expect_only_whitespace(self) -> None:
        if self._buf[self._pos :].strip(_WHITESPACE):
            raise LogFileError("log file has content after its JSON object")
        self._buf, self._pos = "", 0

    def _peek(self, end: bool) -> str:
        found = _NON_WHITESPACE.search(self._buf, self._pos)
        self._pos = found.start() if found else len(self._buf)
        if self._pos >= len(self._buf):
            if end:
                raise LogFileError("log file ends before its end (truncated)")
            raise _NeedMoreError
        return self._buf[self._pos]

    def _value(self, end: bool) -> Any:
        self._peek(end)
        try:
            value, after = _DECODER.raw_decode(self._buf, self._pos)
        except json.JSONDecodeError as exc:
            if end:
                raise LogFileError(f"log file is not JSON: {exc}") from None
            # Cut off or invalid: only more input tells; the size limit bounds the wait.
            raise _NeedMoreError from None
        if not end and self._may_go_on(value, after):
            raise _NeedMoreError
        self._pos = after
        return value

    def _may_go_on(self, value: Any, after: int) -> bool:
        """A number or literal that reaches the buffer's end, or a number cut at a `.`/`e`
        (`1.` decodes as 1), may go on in the next chunk: decode it again then."""
        if isinstance(value, dict | list | str):
            return False
        return after >= len(self._buf) or self._buf[after] in _NUMBER_GOES_ON

    def _punct(self, end: bool, allowed: str) -> str:
        char = self._peek(end)
        if char not in allowed:
            raise LogFileError(f"log file: expected one of {allowed!r}, found {char!r}")
        self._pos += 1
        return char

    def _step(self, *, end: bool) -> dict[str, Any] | None:
        """Advance by one token; a record when one is complete."""
        state = self._state
        if state is _State.START:
            self._punct(end, "{")
            self._state = _State.FIRST_KEY
        elif state in (_State.FIRST_KEY, _State.KEY):
            self._step_key(end)
        elif state is _State.COLON:
            self._punct(end, ":")
            self._state = _State.RECORDS if self._key == "Records" else _State.VALUE
        elif state is _State.VALUE:
            self._value(end)  # another top-level key: not ours, skipped
            self._state = _State.AFTER_VALUE
        elif state is _State.RECORDS:
            if self._peek(end) != "[":
                raise LogFileError('"Records" is not a list')
            self._pos += 1
            self._state = _State.FIRST_ITEM
        elif state in (_State.FIRST_ITEM, _State.ITEM, _State.AFTER_ITEM):
            return self._step_records(end)
        elif state is _State.AFTER_VALUE:
            closing = self._punct(end, ",}")
            self._state = _State.DONE if closing == "}" else _State.KEY
        return None

    def _step_key(self, end: bool) -> None:
        if self._state is _State.FIRST_KEY and self._peek(end) == "}":
            self._pos += 1
            self._state = _State.DONE
            return
        key = self._value(end)
        if not isinstance(key, str):
            raise LogFileError("log file: an object key is not a string")
        if key == "Records" and self._seen_records:
            raise LogFileError('log file has "Records" twice')
        self._seen_records = self._seen_records or key == "Records"
        self._key, self._state = key, _State.COLON

    def _step_records(self, end: bool) -> dict[str, Any] | None:
        if self._state is not _State.ITEM and self._peek(end) == "]":
            self._pos += 1
            self._state = _State.AFTER_VALUE
            return None
        if self._state is _State.AFTER_ITEM:
            self._punct(end, ",")
            self._state = _State.ITEM
            return None
        record = self._value(end)
        if not isinstance(record, dict):
            raise LogFileError("a record is not a JSON object")
        self._state = _State.AFTER_ITEM
        return record


def read_all(chunks: Iterable[bytes], *, max_record: int = MAX_RECORD) -> list[dict[str, Any]]:
    """Every record of a whole file given as chunks (tests, small files)."""
    reader = LogFileReader(max_record=max_record)
    records: list[dict[str, Any]] = []
    for chunk in chunks:
        if chunk:
            records.extend(reader.feed(chunk))
    records.extend(reader.feed(b""))
    return records
