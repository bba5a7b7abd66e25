"""``fmnist-outfits``: multi-label 2x2 mosaics ("outfits") of Fashion-MNIST items (docs/protocols.md).

Each 56x56 mosaic holds 1-4 items, each in its own random cell of a 2x2 grid (empty cells black):
always one top (T-shirt/top, Pullover, Coat, Shirt or Dress, uniformly); Trousers with probability
0.7 unless a Dress was drawn; footwear with probability 0.8 (Sandal, Sneaker or Ankle boot,
uniformly); a Bag with probability 0.3. Item images are drawn uniformly from their class in the
source file. The label is the multi-hot set of item classes.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError

TOPS = np.array([0, 2, 4, 6, 3])  # T-shirt/top, Pullover, Coat, Shirt, Dress
DRESS, TROUSER, BAG = 3, 1, 8
FOOTWEAR = np.array([5, 7, 9])  # Sandal, Sneaker, Ankle boot
P_TROUSER, P_FOOTWEAR, P_BAG = 0.7, 0.8, 0.3
N_CLASSES = 10
SIDE = 28


def make_outfits(
    images: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``n`` mosaics from ``images`` (M, 28, 28) with integer ``labels`` (M,).

    Returns the mosaics (n, 56, 56) uint8, their multi-hot labels (n, 10) uint8 and the source
    index of the item in each of the four slots (top, trousers, footwear, bag), -1 where absent.
    """
    slot_class = np.stack(
        [
            rng.choice(TOPS, n),
            np.full(n, TROUSER),
            rng.choice(FOOTWEAR, n),
            np.full(n, BAG),
        ],
        axis=1,
    )
    present = np.stack(
        [
            np.ones(n, bool),
            (rng.random(n) < P_TROUSER) & (slot_class[:, 0] != DRESS),
            rng.random(n) < P_FOOTWEAR,
            rng.random(n) < P_BAG,
        ],
        axis=1,
    )
    cells = np.argsort(rng.random((n, 4)), axis=1)  # a random permutation of the 4 cells per mosaic
    pick = rng.random((n, 4))

    by_class = [np.flatnonzero(labels == c) for c in range(N_CLASSES)]
    counts = np.array([len(b) for b in by_class])
    if (counts[np.unique(slot_class)] == 0).any():
        raise DataError("the source images lack a class that outfits need")
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    flat = np.concatenate(by_class)
    within = np.minimum((pick * counts[slot_class]).astype(np.int64), counts[slot_class] - 1)
    item = np.where(present, flat[offsets[slot_class] + within], -1)

    grid = np.zeros((n, 2, SIDE, 2, SIDE), np.uint8)
    multi_hot = np.zeros((n, N_CLASSES), np.uint8)
    for slot in range(4):
        rows = np.flatnonzero(present[:, slot])
        r, c = np.divmod(cells[rows, slot], 2)
        grid[rows, r, :, c, :] = images[item[rows, slot]]
        multi_hot[rows, slot_class[rows, slot]] = 1
    return grid.reshape(n, 2 * SIDE, 2 * SIDE), multi_hot, item
