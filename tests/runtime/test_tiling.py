"""The tile grid: boxes partition the latent, and a tile's box needs no listing of the grid."""
import numpy as np
import pytest

from stcm.runtime.tiling import TileGrid


@pytest.mark.parametrize("shape,size", [((7, 5), 3), ((8, 8), 8), ((1, 9), 4), ((13, 16), 4)])
def test_the_boxes_cover_every_position_once(shape, size):
    grid = TileGrid(*shape, size)
    seen = np.zeros(shape, int)
    for t, (r, c, h, w) in enumerate(grid.boxes()):
        assert grid.box(t) == (r, c, h, w)
        assert h > 0 and w > 0
        seen[r: r + h, c: c + w] += 1
    assert (seen == 1).all()
    assert len(grid.boxes()) == grid.count


def test_cover_is_the_smallest_box_holding_the_tiles():
    grid = TileGrid(13, 16, 4)  # 4 x 4 tiles, the last row 1 position high
    assert grid.cover([5]) == (4, 4, 4, 4)
    assert grid.cover([5, 14]) == (4, 4, 9, 8)  # tile 14: rows 12-12, cols 8-11
    assert grid.cover(range(grid.count)) == (0, 0, 13, 16)
