import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from hashdistill.codes import CodesFileError, as_packed, binarize, bit_balance, hamming, load_codes, pack, unpack


def test_binarize_sign_zero_is_plus_one():
    assert binarize(np.array([-0.5, 0.0, 2.0])).tolist() == [-1, 1, 1]
    assert binarize(torch.tensor([[-1e-9, 0.0]])).tolist() == [[-1, 1]]
    assert binarize(np.array([True, False])).tolist() == [1, -1]


def test_pack_uses_numpy_packbits_order_and_round_trips():
    rng = np.random.default_rng(0)
    c = rng.choice([-1, 1], (50, 24)).astype(np.int8)
    p = pack(c)
    assert p.dtype == np.uint8 and p.shape == (50, 3)
    assert (p == np.packbits(c > 0, axis=1)).all()
    # first bit is the most significant bit of the first byte
    first = np.full((1, 8), -1, np.int8)
    first[0, 0] = 1
    assert pack(first)[0, 0] == 128
    assert (unpack(p) == c).all() and (unpack(p, 24) == c).all()
    assert (as_packed(p) == p).all() and (as_packed(c) == p).all()


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
)
def test_the_codes_loader_gives_valid_codes_or_one_line_naming_the_file(codes, ids, npy):
    """Any array a user saves loads as packed codes that mean what the array meant, or fails with a
    ``CodesFileError`` naming the file; nothing else escapes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("c.npy" if npy else "c.npz")
        np.save(path, codes) if npy else np.savez(path, codes=codes, **({} if ids is None else {"ids": ids}))
        try:
            packed, got_ids, _ = load_codes(path)
        except CodesFileError as e:
            assert str(e).startswith(f"{path}: ") and "\n" not in str(e)
            return
    assert packed.dtype == np.uint8 and packed.ndim == 2 and len(packed) == len(codes) > 0
    if codes.dtype == np.uint8:
        assert np.array_equal(packed, codes)  # packed bytes as they were
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
