"""A deterministic mutation fuzzer of the node's listener, for the test suite and for
``benchmarks/fuzz.py``.

Each input is a small DX film (:func:`tests.films.make_film`) with a SOP Instance UID of
its own, written in one of seven transfer syntaxes and then damaged by one of twelve
mutations, in turn; a seed fixes every choice. An input is *decodable* when the
project's reader (:func:`pacsnode.imaging.reader.read_film`) turns its bytes into an
image; the node must never answer 0000 to one that is not.
"""

from __future__ import annotations

import copy
import io
import random
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pynetdicom._config
from pydicom.dataset import Dataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    MRImageStorage,
    RLELossless,
)
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from pacsnode.errors import ImageReadError
from pacsnode.imaging.reader import read_film
from tests.films import encode, film_pixels, make_film, set_raw

__all__ = ["MUTATIONS", "Fuzzer", "Mutant", "Sent", "decodable", "send"]

SYNTAXES: Final = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
    RLELossless,
    JPEGLSLossless,
    JPEG2000Lossless,
)
_NATIVE: Final = SYNTAXES[:4]
_NATIVE_ONLY: Final = frozenset({"absurd_dimensions", "photometric_samples", "missing_pixel_data"})
"""Mutations of the pixel module: written uncompressed (no encoder takes them)."""
_UID_ROOT: Final = "1.2.826.0.1.3680043.8.498"  # pydicom's root, as tests.films uses
_LONG_VRS: Final = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)


@dataclass(frozen=True)
class Mutant:
    """One fuzz input.

    Attributes
    ----------
    index
        Its place in the run, from 0.
    mutation
        The mutation's name, e.g. ``"bit_flips"``.
    syntax
        The transfer syntax the film was written in before the mutation.
    data
        The file: preamble, file meta, data set.
    sop_class_uid, sop_instance_uid
        What the file meta says, and so what the C-STORE request carries.
    """

    index: int
    mutation: str
    syntax: str
    data: bytes = field(repr=False)
    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class Sent:
    """What became of one input.

    Attributes
    ----------
    status
        The C-STORE status, or None when there was none.
    outcome
        ``"answered"``; ``"not sent"`` (the SCU refused the input itself, so the node
        never saw it); ``"rejected"`` (association refused); ``"aborted"`` or
        ``"no answer"``.
    """

    status: int | None
    outcome: str

    @property
    def label(self) -> str:
        """``"0xA900"`` for an answer, else the outcome: the key statistics count by."""
        return f"0x{self.status:04X}" if self.status is not None else self.outcome


Mutation = Callable[["_Context"], bytes]
MUTATIONS: list[tuple[str, Mutation]] = []


def _mutation(function: Mutation) -> Mutation:
    MUTATIONS.append((function.__name__, function))
    return function


@dataclass
class _Context:
    rng: random.Random
    film: Dataset
    syntax: str
    meta_class: str = field(default="")
    meta_instance: str = field(default="")

    def encoded(self, ds: Dataset | None = None, syntax: str | None = None) -> bytes:
        ds = self.film if ds is None else ds
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return encode(ds, syntax or self.syntax)
            except Exception:  # big endian needs the pixel data it swaps: write it plainly
                self.syntax = ExplicitVRLittleEndian
                return encode(ds, self.syntax)


class Fuzzer:
    """Makes the inputs of one run.

    Parameters
    ----------
    seed
        Fixes every random choice: the same seed gives the same inputs.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._base = make_film(film_pixels(12))

    def mutants(self, count: int, start: int = 0) -> Iterator[Mutant]:
        """Inputs ``start`` to ``start + count - 1``; each depends only on the seed and
        its index, the mutations taken in turn."""
        for index in range(start, start + count):
            yield self.mutant(index)

    def mutant(self, index: int) -> Mutant:
        rng = random.Random(f"{self.seed}:{index}")
        name, mutate = MUTATIONS[index % len(MUTATIONS)]
        film = copy.deepcopy(self._base)
        uid = f"{_UID_ROOT}.{self.seed % 10**6}.{index + 1}"
        film.SOPInstanceUID = film.file_meta.MediaStorageSOPInstanceUID = uid
        syntax = rng.choice(_NATIVE if name in _NATIVE_ONLY else SYNTAXES)
        context = _Context(rng, film, syntax)
        with warnings.catch_warnings():  # pydicom warns of the malformed values set
            warnings.simplefilter("ignore")
            data = mutate(context)
        return Mutant(
            index,
            name,
            str(syntax),
            data,
            context.meta_class or str(film.file_meta.MediaStorageSOPClassUID),
            context.meta_instance or uid,
        )


# --- byte-level mutations ----------------------------------------------------------------


def _split(data: bytes) -> tuple[bytes, bytes]:
    """(preamble and file meta, data set)."""
    (length,) = struct.unpack("<I", data[140:144])
    end = 144 + length
    return data[:end], data[end:]


def _body(context: _Context) -> tuple[bytes, bytes, bool]:
    """The meta, the data set inflated when deflated, and whether it was."""
    meta, body = _split(context.encoded())
    deflated = context.syntax == DeflatedExplicitVRLittleEndian
    if deflated:
        body = zlib.decompress(body, -zlib.MAX_WBITS)
    return meta, body, deflated


def _join(meta: bytes, body: bytes, deflated: bool) -> bytes:
    if deflated:
        compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        body = compressor.compress(body) + compressor.flush()
    return meta + body


def _elements(body: bytes, syntax: str) -> list[tuple[int, int, int]]:
    """(offset, header size, value length) of each top-level element, up to the first of
    undefined length."""
    explicit = syntax != ImplicitVRLittleEndian
    order = ">" if syntax == ExplicitVRBigEndian else "<"
    found = []
    at = 0
    while at + 8 <= len(body):
        vr = body[at + 4 : at + 6]
        if explicit and vr in _LONG_VRS:
            (length,) = struct.unpack(f"{order}I", body[at + 8 : at + 12])
            header = 12
        elif explicit:
            (length,) = struct.unpack(f"{order}H", body[at + 6 : at + 8])
            header = 8
        else:
            (length,) = struct.unpack("<I", body[at + 4 : at + 8])
            header = 8
        found.append((at, header, length))
        if length == 0xFFFFFFFF:
            break
        at += header + length
    return found


@_mutation
def bit_flips(context: _Context) -> bytes:
    data = bytearray(context.encoded())
    start = len(_split(bytes(data))[0])
    for _ in range(context.rng.randint(1, 24)):
        at = context.rng.randrange(start, len(data))
        data[at] ^= 1 << context.rng.randrange(8)
    return bytes(data)


@_mutation
def truncation(context: _Context) -> bytes:
    meta, body = _split(context.encoded())
    return meta + body[: context.rng.randrange(0, len(body))]


def _length_field(at: int, header: int, syntax: str) -> tuple[int, int]:
    """(offset, size) of the length field of the element at ``at``."""
    if syntax == ImplicitVRLittleEndian:
        return at + 4, 4
    return (at + 8, 4) if header == 12 else (at + 6, 2)


def _set_length(body: bytes, element: tuple[int, int, int], syntax: str, value: int) -> bytes:
    offset, size = _length_field(element[0], element[1], syntax)
    order = ">" if syntax == ExplicitVRBigEndian else "<"
    packed = struct.pack(f"{order}{'I' if size == 4 else 'H'}", value & (2 ** (8 * size) - 1))
    return body[:offset] + packed + body[offset + size :]


@_mutation
def element_length(context: _Context) -> bytes:
    meta, body, deflated = _body(context)
    element = context.rng.choice(_elements(body, context.syntax))
    length = element[2]
    value = context.rng.choice(
        [0, 1, length + 1, length * 2 + 3, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFF0, 0xFFFFFFFF]
    )
    return _join(meta, _set_length(body, element, context.syntax, value), deflated)


@_mutation
def element_vr(context: _Context) -> bytes:
    if context.syntax == ImplicitVRLittleEndian:
        context.syntax = ExplicitVRLittleEndian
    meta, body, deflated = _body(context)
    at, _, _ = context.rng.choice(_elements(body, context.syntax))
    vr = context.rng.choice([b"XX", b"\x00\x00", b"SQ", b"UN", b"OB", b"US", b"FD", b"ox"])
    return _join(meta, body[: at + 4] + vr + body[at + 6 :], deflated)


@_mutation
def huge_declared_length(context: _Context) -> bytes:
    """The last element (the pixel data) or a private element claims far more than the
    data set holds: up to 4 GiB."""
    private = context.rng.random() < 0.5
    if private:
        context.film.add_new(0x00090010, "LO", "FUZZ")
        context.film.add_new(0x00091001, "OB", b"\x00" * 16)
    meta, body, deflated = _body(context)
    elements = _elements(body, context.syntax)
    tags = (b"\x09\x00\x01\x10", b"\x00\x09\x10\x01")
    targets = [e for e in elements if body[e[0] : e[0] + 4] in tags] if private else []
    value = context.rng.choice([0x7FFFFFFF, 0xFFFFFFF0, 0x10000000])
    element = (targets or elements)[-1]
    return _join(meta, _set_length(body, element, context.syntax, value), deflated)


@_mutation
def wrong_transfer_syntax(context: _Context) -> bytes:
    """The file meta (and so the presentation context) names one syntax, the data set is
    written in another."""
    _, body = _split(context.encoded())
    meta = copy.deepcopy(context.film.file_meta)
    meta.TransferSyntaxUID = UID(
        context.rng.choice([ts for ts in SYNTAXES if ts != context.syntax])
    )
    buffer = io.BytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)
    return buffer.getvalue() + body


# --- attribute-level mutations -----------------------------------------------------------


@_mutation
def absurd_dimensions(context: _Context) -> bytes:
    film, rng = context.film, context.rng
    keyword = rng.choice(
        [
            "Rows",
            "Columns",
            "BitsAllocated",
            "BitsStored",
            "HighBit",
            "NumberOfFrames",
            "PixelRepresentation",
            "Rows+Columns",
        ]
    )
    if keyword == "Rows+Columns":
        film.Rows, film.Columns = 65535, 65535
    elif keyword == "NumberOfFrames":
        film.NumberOfFrames = rng.choice([0, 2, 500, 2**31 - 1])
    elif keyword in ("Rows", "Columns"):
        setattr(film, keyword, rng.choice([0, 1, 15, 17, 48 * 64, 65535]))
    elif keyword == "BitsAllocated":
        film.BitsAllocated = rng.choice([0, 1, 7, 8, 12, 32, 64])
    elif keyword == "BitsStored":
        film.BitsStored = rng.choice([0, 17, 33, 255])
    elif keyword == "HighBit":
        film.HighBit = rng.choice([0, 16, 99])
    else:
        film.PixelRepresentation = rng.choice([2, 255])
    return context.encoded()


@_mutation
def photometric_samples(context: _Context) -> bytes:
    film, rng = context.film, context.rng
    choice = rng.randrange(5)
    if choice == 0:
        film.SamplesPerPixel = 3
    elif choice == 1:
        film.PhotometricInterpretation = rng.choice(["RGB", "YBR_FULL", "PALETTE COLOR"])
    elif choice == 2:
        film.PhotometricInterpretation = rng.choice(["MONOCHROME3", "", "monochrome2"])
    elif choice == 3:
        film.SamplesPerPixel, film.PlanarConfiguration = 3, 1
        film.PhotometricInterpretation = "RGB"
    else:
        film.SamplesPerPixel = 0
    return context.encoded()


@_mutation
def missing_pixel_data(context: _Context) -> bytes:
    film, rng = context.film, context.rng
    choice = rng.randrange(4)
    if choice == 0:
        del film.PixelData
    elif choice == 1:
        film.PixelData = b""
    elif choice == 2:
        film.PixelData = film.PixelData[: rng.randrange(1, len(film.PixelData))]
    else:
        del film.PixelData
        film.add_new(0x7FE00008, "OF", b"\x00" * 64)
    return context.encoded()


@_mutation
def wrong_sop_class(context: _Context) -> bytes:
    film, rng = context.film, context.rng
    choice = rng.randrange(3)
    other = rng.choice([CTImageStorage, MRImageStorage, "1.2.3.4", "1.2.840.10008.1.1"])
    film.SOPClassUID = other
    if choice >= 1:  # the request says so too
        film.file_meta.MediaStorageSOPClassUID = other
        context.meta_class = other
    if choice == 2:
        film.Modality = "CT"
    return context.encoded()


@_mutation
def path_like_uids(context: _Context) -> bytes:
    film, rng = context.film, context.rng
    keyword = rng.choice(["SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"])
    value = rng.choice(
        [
            "../../../../etc/passwd",
            "1.2.3/../../../tmp/x",
            "..",
            "/abs/olute",
            "1.2." + "9" * 70,
            "1.2.3\\4",
            "C:\\Windows\\x",
            "1.2.3.4\x00",
        ]
    )
    set_raw(film, keyword, value.encode("latin-1") + b"\x00" * (len(value) % 2))
    if keyword == "SOPInstanceUID" and rng.random() < 0.5:
        # The request names it too (an SCU may refuse to send that).
        set_raw(
            film.file_meta,
            "MediaStorageSOPInstanceUID",
            value.encode("latin-1") + b"\x00" * (len(value) % 2),
        )
        context.meta_instance = value
    return context.encoded()


@_mutation
def garbage(context: _Context) -> bytes:
    """Random bytes after a valid file meta, or after the first elements of a data set."""
    meta, body = _split(context.encoded())
    keep = context.rng.choice([0, context.rng.randrange(len(body))])
    noise = context.rng.randbytes(context.rng.randrange(1, 8192))
    return meta + body[:keep] + noise


# --- the oracle and the sender -------------------------------------------------------------


def decodable(data: bytes) -> bool:
    """Whether the project's reader makes an image of these bytes."""
    try:
        read_film(data)
    except ImageReadError:
        return False
    except Exception:  # a reader bug: the input is not something the node can use either
        return False
    return True


def send(port: int, mutant: Mutant, work: Path, *, timeout: float = 30.0) -> Sent:
    """Send one input on an association of its own, the file's bytes as they are."""
    path = work / f"mutant-{mutant.index}.dcm"
    path.write_bytes(mutant.data)
    ae = AE(ae_title="FUZZSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(mutant.sop_class_uid, _meta_syntax(mutant.data))
    ae.add_requested_context(Verification)
    saved = pynetdicom._config.STORE_SEND_CHUNKED_DATASET
    pynetdicom._config.STORE_SEND_CHUNKED_DATASET = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assoc = ae.associate("127.0.0.1", port, ae_title="PACSNODE")
            if not assoc.is_established:
                return Sent(None, "rejected")
            try:
                answer = assoc.send_c_store(path)
            except Exception:  # pynetdicom would not send it: the node never saw it
                assoc.abort()
                return Sent(None, "not sent")
            if assoc.is_aborted:
                return Sent(None, "aborted")
            assoc.release()
    finally:
        pynetdicom._config.STORE_SEND_CHUNKED_DATASET = saved
        path.unlink(missing_ok=True)
    if "Status" not in answer:
        return Sent(None, "no answer")
    return Sent(int(answer.Status), "answered")


def echo(port: int, *, timeout: float = 10.0) -> bool:
    """Whether the listener answers a C-ECHO."""
    ae = AE(ae_title="FUZZSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSNODE")
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return "Status" in status and status.Status == 0
    finally:
        assoc.release()


def _meta_syntax(data: bytes) -> str:
    """The Transfer Syntax UID of the file meta, read from the bytes."""
    at = data.find(b"\x02\x00\x10\x00UI")
    if at == -1:
        return ExplicitVRLittleEndian
    (length,) = struct.unpack("<H", data[at + 6 : at + 8])
    return data[at + 8 : at + 8 + length].rstrip(b"\x00 ").decode("ascii", "replace")
