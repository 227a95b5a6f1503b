"""Keeps patient data out of free text: log lines, audit reasons, a job's last error.

Whoever handles a film (the listener, the worker) makes a screen of its patient values
active in its thread; the log handler, the audit log and the queue apply it to the text
they write, whatever exception or message the text came from.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import struct
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Final

__all__ = [
    "PATIENT_KEYWORDS",
    "SCREENED",
    "WHILE_READING",
    "PatientScreen",
    "ScreeningFilter",
    "active_screen",
    "screen_text",
    "screening",
]

SCREENED: Final = "***"
"""What a patient value is replaced with."""

WHILE_READING: Final = "*** (text withheld: logged while the patient values were read)"
"""What replaces a whole text screened while its screen reads the film's values."""

PATIENT_KEYWORDS: Final = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "OtherPatientIDs",
    "OtherPatientNames",
    "AccessionNumber",
)
"""The attributes whose values never reach free text."""

# (group, element) of each keyword, for the raw scan of a header pydicom cannot parse.
_TAGS: Final = {
    "PatientName": (0x0010, 0x0010),
    "PatientID": (0x0010, 0x0020),
    "PatientBirthDate": (0x0010, 0x0030),
    "OtherPatientIDs": (0x0010, 0x1000),
    "OtherPatientNames": (0x0010, 0x1001),
    "AccessionNumber": (0x0008, 0x0050),
}
_WORDS: Final = re.compile(r"[\s\-'.,]+")
"""What separates the words of a name component: "Quoxley-Brandt", "O'Neil", "St. John"."""
_DEFLATED: Final = b"1.2.840.10008.1.2.1.99"
_TEXT_VRS: Final = frozenset({b"PN", b"LO", b"SH", b"DA", b"UN", b"UT", b"ST"})
_OTHER_IDS_SEQUENCE: Final = "OtherPatientIDsSequence"
_HEADER_BYTES: Final = 1024 * 1024
"""How much of a file the raw scan reads: the patient module sits near the start."""
_SHORTEST: Final = 2
"""Shorter values are not screened: one letter would blank every word."""
_WHOLE_WORD_BELOW: Final = 4
"""Values shorter than this are replaced only where they stand as a whole word."""

_ACTIVE: ContextVar[PatientScreen | None] = ContextVar("pacsnode_patient_screen", default=None)


class PatientScreen:
    """Replaces a film's patient values in text with :data:`SCREENED`.

    Matching ignores case. A person name also screens each of its components (family,
    given...) and their words (split at spaces, hyphens, apostrophes) of three letters or
    more; a date also screens its
    ``YYYY-MM-DD`` and ``YYYY.MM.DD`` forms.

    Parameters
    ----------
    values
        The raw values (a person name with its ``^`` and ``=`` separators).
    loader
        Instead of ``values``: called once, on first use, for the values.
    """

    def __init__(
        self,
        values: Iterable[str] = (),
        *,
        loader: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        self._values = tuple(values)
        self._loader = loader
        self._lock = threading.Lock()
        self._reader: int | None = None  # the thread reading the values, while it does
        self._pattern: re.Pattern[str] | None = None
        self._ready = loader is None
        if self._ready:
            self._pattern = _pattern(self._values)

    @classmethod
    def of(cls, source: bytes | bytearray | memoryview | Path | Any) -> PatientScreen:
        """The screen of a film: its bytes, its file, or a pydicom dataset; read lazily,
        never raising (an unreadable header screens what a raw scan finds)."""
        return cls(loader=lambda: patient_values(source))

    @classmethod
    def read(cls, source: bytes | bytearray | memoryview | Path | Any) -> PatientScreen:
        """As :meth:`of`, but read now: for a file that may be moved or deleted soon."""
        screen = cls.of(source)
        screen._load()
        return screen

    @property
    def values(self) -> tuple[str, ...]:
        """The raw values this screen hides."""
        return self._values if self._load() else ()

    def __call__(self, text: str) -> str:
        """``text`` with every patient value replaced."""
        if not text:
            return text
        if not self._load():
            # Asked while the values are being read (pydicom logs as it parses the
            # header): nothing in such a text can be checked, so none of it is shown.
            return WHILE_READING
        if self._pattern is None:
            return text
        return self._pattern.sub(SCREENED, text)

    def _load(self) -> bool:
        """Read the values once; False when called again from inside that reading."""
        if self._ready:
            return True
        if self._reader == threading.get_ident():
            return False
        failed = False
        with self._lock:
            if self._ready:
                return True
            self._reader = threading.get_ident()
            try:
                assert self._loader is not None
                self._values = tuple(self._loader())
            except Exception:  # a screen must never be why the node fails
                self._values = ()
                failed = True
            finally:
                self._reader = None
            self._pattern = _pattern(self._values)
            self._ready = True
        if failed:
            logging.getLogger(__name__).warning("patient values could not be read")
        return True


def active_screen() -> PatientScreen | None:
    """The screen made active in this thread by :func:`screening`, if any."""
    return _ACTIVE.get()


def screen_text(text: str | None) -> str | None:
    """``text`` through the active screen; unchanged when none is active."""
    screen = _ACTIVE.get()
    return text if text is None or screen is None else screen(text)


@contextlib.contextmanager
def screening(screen: PatientScreen) -> Iterator[PatientScreen]:
    """Make ``screen`` active in this thread (and context) for the block."""
    token = _ACTIVE.set(screen)
    try:
        yield screen
    finally:
        _ACTIVE.reset(token)


class ScreeningFilter(logging.Filter):
    """A handler filter that passes every record through the active screen: its message,
    its exception's traceback and its stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        screen = _ACTIVE.get()
        if screen is None:
            return True
        record.msg = screen(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = screen(record.exc_text)
        if record.stack_info:
            record.stack_info = screen(record.stack_info)
        return True


# --- reading the values --------------------------------------------------------------


def patient_values(source: bytes | bytearray | memoryview | Path | Any) -> list[str]:
    """The patient values of a film's header: pydicom's reading, else a raw scan."""
    from pydicom.dataset import Dataset

    if isinstance(source, Dataset):
        return _dataset_values(source)
    if isinstance(source, Path | str):
        with open(source, "rb") as fp:
            head = fp.read(_HEADER_BYTES)
    else:
        head = bytes(source[:_HEADER_BYTES])
    inflated = _inflated(head)
    if inflated is not None:
        # Never pydicom on deflated data: it inflates without bound (a zip bomb).
        return list(dict.fromkeys(_raw_values(inflated)))
    values = _raw_values(head)
    with contextlib.suppress(Exception):  # a malformed header: the raw scan stands
        values += _dataset_values(_read_header(head))
    return list(dict.fromkeys(values))


def _inflated(head: bytes) -> bytes | None:
    """The first MiB of the data set of a file in Deflated Explicit VR Little Endian, or
    None for any other file."""
    if head[128:132] != b"DICM" or _DEFLATED not in head[132:1024]:
        return None
    # The file meta: (0002,0000) UL, its group length, right after the prefix.
    if head[132:138] != b"\x02\x00\x00\x00UL" or len(head) < 144:
        return b""
    (length,) = struct.unpack("<I", head[140:144])
    try:
        return zlib.decompressobj(-zlib.MAX_WBITS).decompress(head[144 + length :], _HEADER_BYTES)
    except zlib.error:
        return b""


def _read_header(head: bytes) -> Any:
    import pydicom

    from pacsnode.imaging.reader import captured_warnings

    # The sender's malformed values are not the node's fault: kept out of the log.
    with captured_warnings():
        return pydicom.dcmread(
            io.BytesIO(head), stop_before_pixels=True, force=True, defer_size=64 * 1024
        )


def _dataset_values(ds: Any) -> list[str]:
    values: list[str] = []
    for keyword in PATIENT_KEYWORDS:
        values += _element_values(ds, keyword)
    with contextlib.suppress(Exception):
        for item in ds.get(_OTHER_IDS_SEQUENCE) or ():
            values += _element_values(item, "PatientID")
    return values


def _element_values(ds: Any, keyword: str) -> list[str]:
    """The element's value(s) as text, unconverted where pydicom has not converted it
    (a malformed value must be screened, not refused)."""
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    try:
        element = ds.get_item(tag) if tag is not None else None
    except Exception:
        return []
    if element is None:
        return []
    value = element.value
    if isinstance(value, bytes | bytearray):
        return _decoded(bytes(value))
    items = value if isinstance(value, list | tuple) or _is_multi(value) else [value]
    return [str(item) for item in items if item is not None and str(item).strip()]


def _is_multi(value: object) -> bool:
    from pydicom.multival import MultiValue

    return isinstance(value, MultiValue)


def _decoded(raw: bytes) -> list[str]:
    """Every way a value's bytes may appear in text: UTF-8, Latin-1, and as Python
    escapes (``b'M\\xc3\\xbcller'``)."""
    raw = raw.rstrip(b"\x00 ")
    if not raw:
        return []
    forms = {raw.decode("utf-8", errors="replace"), raw.decode("latin-1")}
    escaped = repr(raw)[2:-1]
    forms.add(escaped)
    values: list[str] = []
    for form in forms:
        values += (
            [part for part in form.split("\\") if part.strip()] if "\\x" not in form else [form]
        )
    return values


def _raw_values(head: bytes) -> list[str]:
    """Values found by looking for each tag in the bytes before the pixel data, explicit
    VR (either byte order) or implicit VR little endian, where they read as text."""
    for pixels in (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10"):
        end = head.find(pixels)
        if end != -1:
            head = head[:end]
    values: list[str] = []
    for group, element in _TAGS.values():
        for order in ("<", ">"):
            needle = struct.pack(f"{order}HH", group, element)
            start = head.find(needle)
            while start != -1:
                values += _raw_value_at(head, start + 4, order)
                start = head.find(needle, start + 1)
    return values


def _raw_value_at(head: bytes, at: int, order: str) -> list[str]:
    vr = head[at : at + 2]
    if vr in _TEXT_VRS:
        if len(head) < at + 4:
            return []
        (length,) = struct.unpack(f"{order}H", head[at + 2 : at + 4])
        start = at + 4
    else:
        if order == ">" or len(head) < at + 4:
            return []
        (length,) = struct.unpack("<I", head[at : at + 4])
        start = at + 4
    raw = head[start : start + length]
    if not 0 < length <= 1024 or len(raw) < length:
        return []
    if any(byte < 0x20 and byte not in (0x00, 0x1B) for byte in raw):
        return []  # not text: a chance match in other data
    return _decoded(raw)


# --- the pattern -----------------------------------------------------------------------


def _tokens(values: Iterable[str]) -> set[str]:
    tokens: set[str] = set()
    for value in values:  # one value each: multi-values were split when read
        whole = value.strip(" \x00")
        tokens.add(whole)
        # Person name: groups (=), components (^), and the words of each.
        for group in whole.split("="):
            components = [c.strip() for c in group.split("^")]
            tokens.add(group.strip())
            tokens.add(" ".join(c for c in components if c))
            for component in components:
                tokens.add(component)
                tokens.update(word for word in _WORDS.split(component) if len(word) >= 3)
        # Date: YYYYMMDD also as YYYY-MM-DD and YYYY.MM.DD.
        if len(whole) == 8 and whole.isdigit():
            tokens.add(f"{whole[:4]}-{whole[4:6]}-{whole[6:]}")
            tokens.add(f"{whole[:4]}.{whole[4:6]}.{whole[6:]}")
    return {token for token in tokens if len(token) >= _SHORTEST}


def _pattern(values: Iterable[str]) -> re.Pattern[str] | None:
    tokens = sorted(_tokens(values), key=len, reverse=True)
    if not tokens:
        return None
    parts = [
        re.escape(token)
        if len(token) >= _WHOLE_WORD_BELOW
        else rf"(?<![0-9A-Za-z]){re.escape(token)}(?![0-9A-Za-z])"
        for token in tokens
    ]
    return re.compile("|".join(parts), re.IGNORECASE)
