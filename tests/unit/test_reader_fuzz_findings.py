"""What the fuzzer (:mod:`tests.fuzz`) found in the reader, kept as cases: a Rust decoder
that panics instead of raising, damage only a decode shows, a rescale only rendering
reads."""

from __future__ import annotations

import pytest

from pacsnode.errors import ImageReadError, ReadFailure
from pacsnode.imaging.reader import inspect_film, read_film
from tests.films import make_film, set_raw, to_bytes
from tests.fuzz import Fuzzer


def test_a_decoder_panic_is_a_read_error_not_the_end_of_the_thread() -> None:
    mutant = Fuzzer(1).mutant(144)  # bit flips in an RLE Lossless frame
    assert mutant.syntax == "1.2.840.10008.1.2.5"
    with pytest.raises(ImageReadError) as caught:
        read_film(mutant.data)
    assert caught.value.reason is ReadFailure.CORRUPT_PIXEL_DATA
    # pylibjpeg-rle's PanicException derives from BaseException, not Exception.
    cause = caught.value.__cause__
    assert cause is not None and not isinstance(cause, Exception)


def test_a_damaged_codestream_is_refused_when_compressed_data_are_decoded() -> None:
    mutant = Fuzzer(1).mutant(468)  # bit flips in a JPEG 2000 codestream
    assert mutant.syntax == "1.2.840.10008.1.2.4.90"
    inspect_film(mutant.data)  # the header alone looks fine
    with pytest.raises(ImageReadError) as caught:
        inspect_film(mutant.data, decode_compressed=True)
    assert caught.value.reason is ReadFailure.CORRUPT_PIXEL_DATA
    with pytest.raises(ImageReadError):
        read_film(mutant.data)


def test_inspection_refuses_a_rescale_rendering_could_not_use() -> None:
    ds = make_film()
    set_raw(ds, "RescaleSlope", b"1.0(")
    with pytest.raises(ImageReadError, match=r"Rescale Slope \(0028,1053\) is '1.0\('"):
        inspect_film(to_bytes(ds))
