import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from hashdistill.codes import (
    CodesError,
    CodesFileError,
    PackedCodes,
    binarize,
    bit_balance,
    hamming,
    load_codes,
    pack,
    save_codes,
    unpack,
    words,
)


def test_binarize_sign_zero_is_plus_one():
    assert binarize(np.array([-0.5, 0.0, 2.0])).tolist() == [-1, 1, 1]
    assert binarize(torch.tensor([[-1e-9, 0.0]])).tolist() == [[-1, 1]]
    assert binarize(np.array([True, False])).tolist() == [1, -1]


def test_pack_uses_numpy_packbits_order_and_round_trips():
    rng = np.random.default_rng(0)
    c = rng.choice([-1, 1], (50, 24)).astype(np.int8)
    p = pack(c)
    assert isinstance(p, PackedCodes) and p.array.dtype == np.uint8 and p.shape == (50, 3) and p.bits == 24
    assert (np.asarray(p) == np.packbits(c > 0, axis=1)).all()
    # first bit is the most significant bit of the first byte
    first = np.full((1, 8), -1, np.int8)
    first[0, 0] = 1
    assert pack(first).array[0, 0] == 128
    assert (unpack(p) == c).all() and (unpack(p, 24) == c).all() and (unpack(p.array) == c).all()
    assert pack(p) is p and (pack(c > 0).array == p.array).all()  # bool bits pack as they are
    assert (p[5:9].array == p.array[5:9]).all() and isinstance(p[[0, 2]], PackedCodes)


def test_a_plain_uint8_array_is_never_taken_for_codes_of_another_length():
    """A uint8 array of 0/1 bits handed over as codes used to read as packed bytes, 8x the bits; now a uint8
    array is packed only when wrapped as ``PackedCodes``, and integer 0/1 bits are not read as signs."""
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, (6, 64)).astype(np.uint8)
    for handed in (bits, bits.astype(np.int64)):
        with pytest.raises(ValueError, match="uint8 array could be packed bytes|must be -1 or \\+1"):
            pack(handed)
        with pytest.raises(ValueError, match="uint8 array could be packed bytes|must be -1 or \\+1"):
            hamming(handed, handed)
    want = (bits[:, None, :] != bits[None, :, :]).sum(-1)
    assert (hamming(bits.astype(bool), bits.astype(bool)) == want).all()  # bits said as bits
    assert (hamming(PackedCodes(np.packbits(bits, axis=1)), bits.astype(bool)) == want).all()  # bytes said as bytes
    with pytest.raises(ValueError, match="uint8 bytes, got int8"):
        PackedCodes(np.zeros((2, 8), np.int8))


def test_real_codes_with_nan_or_infinity_are_refused_not_read_as_minus_ones():
    """NaN >= 0 is False: a NaN output used to pack as -1 bits, silently; now it is one line, as is infinity."""
    h = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    assert (unpack(pack(h)) == np.where(h >= 0, 1, -1)).all()
    for bad in (np.nan, np.inf, -np.inf):
        h2 = h.copy()
        h2[1, 5] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            pack(h2)


def test_pack_with_a_length_refuses_codes_of_another_and_names_them():
    signs = np.ones((3, 16), np.int8)
    assert pack(signs, 16).bits == 16 and pack(PackedCodes(np.zeros((1, 2), np.uint8)), 16).bits == 16
    with pytest.raises(CodesError, match="^codes have 16 bits, expected 32$"):
        pack(signs, 32)
    with pytest.raises(CodesError, match="^queries have 16 bits, the index holds 64-bit codes$"):
        pack(signs, 64, what="queries", holder="the index")
    with pytest.raises(CodesError, match="^queries: codes must be 2-D"):
        pack(np.ones((2, 2, 8)), 16, what="queries")


def test_words_pad_codes_into_uint64_words_that_keep_their_distances():
    rng = np.random.default_rng(3)
    c = rng.choice([-1, 1], (5, 72))
    w = words(c)
    assert w.dtype == np.uint64 and w.shape == (5, 2) and words(c, 3).shape == (5, 3)
    assert (np.bitwise_count(w[:, None, :] ^ w[None, :, :]).sum(-1) == (c[:, None] != c[None]).sum(-1)).all()
    with pytest.raises(ValueError, match="do not fit in 1 words"):
        words(c, 1)


def test_a_codes_file_carries_its_length_and_old_files_need_the_callers(tmp_path):
    rng = np.random.default_rng(1)
    c = rng.choice([-1, 1], (4, 32))
    save_codes(tmp_path / "new.npz", c, np.arange(4))
    got, ids, _ = load_codes(tmp_path / "new.npz")
    assert got.bits == 32 and (unpack(got) == c).all() and ids.tolist() == [0, 1, 2, 3]
    with pytest.raises(CodesFileError, match="holds 32-bit codes, expected 64"):
        load_codes(tmp_path / "new.npz", 64)
    np.savez(tmp_path / "old.npz", codes=np.packbits(c > 0, axis=1), ids=np.arange(4))  # no 'bits': as before
    with pytest.raises(CodesFileError, match="uint8 codes without a code length"):
        load_codes(tmp_path / "old.npz")
    assert (unpack(load_codes(tmp_path / "old.npz", 32)[0]) == c).all()
    with pytest.raises(CodesFileError, match="uint8 codes of 4 bytes are not 8-bit packed codes"):
        load_codes(tmp_path / "old.npz", 8)


def test_bits_not_multiple_of_eight_fail():
    with pytest.raises(ValueError, match="multiple of 8"):
        pack(np.ones((2, 12)))
    with pytest.raises(ValueError, match="does not hold"):
        unpack(np.zeros((2, 2), np.uint8), 24)


@pytest.mark.parametrize("bits", [8, 40, 64, 136])
def test_hamming_equals_bit_count(bits):
    rng = np.random.default_rng(bits)
    a = rng.choice([-1, 1], (7, bits))
    b = rng.choice([-1, 1], (9, bits))
    want = (a[:, None, :] != b[None, :, :]).sum(-1)
    assert (hamming(a, b) == want).all()
    assert (hamming(pack(a), b) == want).all()
    with pytest.raises(ValueError, match="differ"):
        hamming(a, np.ones((2, bits + 8)))


def test_bit_balance():
    c = np.array([[1, 1, -1, 1, 1, 1, 1, 1], [-1, 1, -1, -1, 1, 1, 1, 1]] * 5)
    s = bit_balance(c)
    assert s.ones_fraction[:4].tolist() == [0.5, 1.0, 0.0, 0.5]
    assert s.unique_codes == 2
    assert s.mean_abs_correlation > 0  # bits 0 and 3 are identical
    assert bit_balance(pack(c)).balance == pytest.approx(s.balance)
    rng = np.random.default_rng(0)
    r = bit_balance(rng.choice([-1, 1], (20000, 32)))
    assert r.balance > 0.98 and r.mean_abs_correlation < 0.02


_dtypes = st.sampled_from([np.uint8, np.int8, np.int32, np.int64, np.uint16, np.float16, np.float32, np.float64, np.bool_])


@settings(max_examples=300, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    codes=arrays(_dtypes, array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=17)),
    ids=st.one_of(st.none(), arrays(st.sampled_from([np.int64, np.float64, np.uint8]), array_shapes(max_dims=2, max_side=17))),
    npy=st.booleans(),
    bits=st.one_of(st.none(), st.sampled_from([8, 16, 64])),
)
def test_the_codes_loader_gives_valid_codes_or_one_line_naming_the_file(codes, ids, npy, bits):
    """Any array a user saves loads as packed codes that mean what the array meant, or fails with a
    ``CodesFileError`` naming the file; nothing else escapes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("c.npy" if npy else "c.npz")
        np.save(path, codes) if npy else np.savez(path, codes=codes, **({} if ids is None else {"ids": ids}))
        try:
            packed, got_ids, _ = load_codes(path, bits)
        except CodesFileError as e:
            assert str(e).startswith(f"{path}: ") and "\n" not in str(e)
            return
    assert isinstance(packed, PackedCodes) and len(packed) == len(codes) > 0
    assert bits is None or packed.bits == bits
    if codes.dtype == np.uint8:
        assert bits is not None and np.array_equal(packed.array, codes)  # packed bytes, as the caller said
    else:
        signs = np.where(codes, 1, -1) if codes.dtype == np.bool_ else np.where(codes >= 0, 1, -1)  # sign(0) = +1
        assert np.array_equal(unpack(packed), signs)
        assert codes.dtype.kind != "f" or np.isfinite(codes).all()
        assert codes.dtype.kind not in "iu" or set(np.unique(codes)) <= {-1, 1}
    if ids is not None and not npy:
        assert got_ids.dtype == np.int64 and np.array_equal(got_ids, ids) and ids.dtype.kind in "iu"


@settings(max_examples=100, deadline=None, database=None, derandomize=True)
@given(st.binary(max_size=300), st.sampled_from([b"", b"PK\x03\x04", b"\x93NUMPY"]))
def test_the_codes_loader_refuses_random_bytes_in_one_line(data, magic):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.npz"
        path.write_bytes(magic + data)
        with pytest.raises(CodesFileError, match=rf"^{re.escape(str(path))}: "):
            load_codes(path)
