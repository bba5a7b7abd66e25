import numpy as np
import pytest
import torch

from hashdistill.codes import as_packed, binarize, bit_balance, hamming, pack, unpack


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
