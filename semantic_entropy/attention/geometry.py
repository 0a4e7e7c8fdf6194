"""Where each of LLaVA-1.5's 24x24 image patches sits on the ORIGINAL image.

LLaVA-1.5 ("pad" aspect ratio) turns a W x H image into patches in three steps:

1. pad to a square of side S = max(W, H), the image pasted centred: offset
   (dx, dy) = ((S - W) // 2, 0) for a tall image, (0, (S - H) // 2) for a wide one
   (`llava.mm_utils.expand2square`);
2. resize the S x S square to 336 x 336 (the processor's shortest-edge resize; the centre
   crop to 336 is then a no-op on a square);
3. cut 336 x 336 into a grid of 24 x 24 patches of 14 x 14 pixels.

So patch (row, col) saw the padded-square box [col*S/24, (col+1)*S/24) x [row*S/24, (row+1)*S/24),
i.e. that box shifted by (-dx, -dy) in original pixels, clipped to the image; a patch whose
box lies wholly in the padding saw no original pixel. "Saw" is exact up to the reach of the
bicubic resize kernel (a pixel or two of the source at the box's border).

Every function here is pure: numbers or arrays in, numbers or arrays out. Boxes are
(x0, y0, x1, y1) with x1, y1 exclusive, in pixels of the original image, floats.
"""

from __future__ import annotations

import math

import numpy as np

GRID = 24  # patches per side of CLIP ViT-L/14-336 (336 / 14)


def padded_square(width: int, height: int) -> tuple[int, int, int]:
    """(S, dx, dy): side of the padded square and the original's offset inside it.

    >>> padded_square(300, 200)   # wide: bands of 50 px above and below
    (300, 0, 50)
    >>> padded_square(180, 260)   # tall: bands of 40 px left and right
    (260, 40, 0)
    >>> padded_square(201, 100)   # odd difference: (201 - 100) // 2 = 50 above, 51 below
    (201, 0, 50)
    >>> padded_square(64, 64)
    (64, 0, 0)
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    side = max(width, height)
    return side, (side - width) // 2, (side - height) // 2


def patch_box_in_padded(row: int, col: int, side: int, grid: int = GRID) -> tuple[float, float, float, float]:
    """Box that patch (row, col) covers in the padded square of side `side`.

    >>> patch_box_in_padded(0, 1, 300)
    (12.5, 0.0, 25.0, 12.5)
    >>> patch_box_in_padded(23, 23, 336)   # at 336 a patch is exactly 14 px
    (322.0, 322.0, 336.0, 336.0)
    """
    if not (0 <= row < grid and 0 <= col < grid):
        raise ValueError(f"patch ({row}, {col}) is outside the {grid}x{grid} grid")
    step = side / grid
    return (col * step, row * step, (col + 1) * step, (row + 1) * step)


def patch_box_in_original(row: int, col: int, width: int, height: int, grid: int = GRID):
    """Box of ORIGINAL pixels that patch (row, col) saw, clipped to the image; None if it saw only padding.

    Wide 300 x 200 (S = 300, dy = 50, 12.5 px per patch): rows 0-3 and 20-23 are padding.

    >>> patch_box_in_original(0, 0, 300, 200) is None
    True
    >>> patch_box_in_original(4, 0, 300, 200)
    (0.0, 0.0, 12.5, 12.5)
    >>> patch_box_in_original(12, 5, 300, 200)
    (62.5, 100.0, 75.0, 112.5)
    >>> patch_box_in_original(19, 23, 300, 200)
    (287.5, 187.5, 300.0, 200.0)

    Tall 180 x 260 (S = 260, dx = 40, 10.83 px per patch): column 3 straddles the left edge.

    >>> [round(v, 2) for v in patch_box_in_original(0, 3, 180, 260)]
    [0.0, 0.0, 3.33, 10.83]
    >>> patch_box_in_original(5, 2, 180, 260) is None
    True
    """
    side, dx, dy = padded_square(width, height)
    x0, y0, x1, y1 = patch_box_in_padded(row, col, side, grid)
    box = (max(x0 - dx, 0.0), max(y0 - dy, 0.0), min(x1 - dx, float(width)), min(y1 - dy, float(height)))
    if box[2] <= box[0] or box[3] <= box[1]:
        return None
    return box


def patch_coverage(width: int, height: int, grid: int = GRID) -> np.ndarray:
    """(grid, grid) fraction of each patch's area that lies on the original image (0 = all padding).

    >>> cov = patch_coverage(300, 200)
    >>> cov.shape, float(cov[0, 0]), float(cov[4, 0]), float(cov.sum())   # 16 full rows of 24
    ((24, 24), 0.0, 1.0, 384.0)
    >>> round(float(patch_coverage(180, 260)[0, 3]), 4)   # 3.33 of 10.83 px
    0.3077
    """
    side, dx, dy = padded_square(width, height)
    edges = np.arange(grid + 1) * (side / grid)  # (grid + 1,) patch borders in the padded square

    def overlap(offset: int, length: int) -> np.ndarray:  # (grid,) share of each patch inside [offset, offset + length)
        lo = np.clip(edges[:-1], offset, offset + length)
        hi = np.clip(edges[1:], offset, offset + length)
        return (hi - lo) / (side / grid)

    return np.outer(overlap(dy, height), overlap(dx, width))


def padding_patches(width: int, height: int, grid: int = GRID) -> np.ndarray:
    """(grid, grid) bool, True where the patch saw only padding.

    >>> int(padding_patches(300, 200).sum())   # 8 rows of 24
    192
    """
    return patch_coverage(width, height, grid) <= 0.0


def pixel_patch_index(length: int, offset: int, side: int, grid: int = GRID) -> np.ndarray:
    """(length,) index of the patch row (or column) whose band holds each pixel's centre.

    Pixel i of the original spans [i, i + 1); its centre i + 0.5 sits at i + 0.5 + offset in
    the padded square.

    >>> pixel_patch_index(200, 50, 300)[[0, 11, 12, 199]].tolist()   # rows of a 300 x 200 image
    [4, 4, 5, 19]
    """
    centres = np.arange(length) + 0.5 + offset
    return np.clip(np.floor(centres * grid / side).astype(int), 0, grid - 1)


def heatmap_to_original(grid_map: np.ndarray, width: int, height: int, smooth: bool = False) -> np.ndarray:
    """Resample a (grid, grid) patch map onto the original image: (height, width) float array.

    Exact mode (default): each pixel takes the value of the patch that saw it (the patch whose
    band holds the pixel's centre), so a patch's heat lands on the pixels it saw and heat on
    padding-only patches lands nowhere. Smooth mode interpolates bilinearly between patch
    centres for display, with padding-only patches set to 0 first (padding still gives none).

    >>> m = np.zeros((24, 24)); m[4, 0] = 1.0
    >>> out = heatmap_to_original(m, 300, 200)
    >>> out.shape, float(out.sum()), bool(out[:12, :12].all())   # pixels with centres in [0, 12.5)^2
    ((200, 300), 144.0, True)
    >>> m = np.zeros((24, 24)); m[0, 0] = 1.0   # a padding-only patch
    >>> float(heatmap_to_original(m, 300, 200).sum()), float(heatmap_to_original(m, 300, 200, smooth=True).sum())
    (0.0, 0.0)
    """
    grid_map = np.asarray(grid_map, dtype=np.float64)
    grid = grid_map.shape[0]
    if grid_map.shape != (grid, grid):
        raise ValueError(f"expected a square patch map, got shape {grid_map.shape}")
    side, dx, dy = padded_square(width, height)
    if not smooth:
        rows = pixel_patch_index(height, dy, side, grid)  # (H,)
        cols = pixel_patch_index(width, dx, side, grid)  # (W,)
        return grid_map[rows[:, None], cols[None, :]]
    masked = np.where(padding_patches(width, height, grid), 0.0, grid_map)
    # Fractional patch coordinate of each pixel centre; patch centres sit at integers.
    fx = (np.arange(width) + 0.5 + dx) * grid / side - 0.5  # (W,)
    fy = (np.arange(height) + 0.5 + dy) * grid / side - 0.5  # (H,)
    knots = np.arange(grid)
    along_x = np.stack([np.interp(fx, knots, masked[r]) for r in range(grid)])  # (grid, W)
    return np.stack([np.interp(fy, knots, along_x[:, c]) for c in range(width)], axis=1)  # (H, W)


def hottest_patch(grid_map: np.ndarray) -> tuple[int, int]:
    """(row, col) of the largest value (the first in row-major order on ties).

    >>> m = np.zeros((24, 24)); m[7, 19] = 3.0
    >>> hottest_patch(m)
    (7, 19)
    """
    grid_map = np.asarray(grid_map)
    row, col = np.unravel_index(int(np.argmax(grid_map)), grid_map.shape)
    return int(row), int(col)


def box_centre(box) -> tuple[float, float]:
    """Centre of a box.

    >>> box_centre((0.0, 10.0, 4.0, 20.0))
    (2.0, 15.0)
    """
    return ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0)


def point_in_box(x: float, y: float, box) -> bool:
    """Whether (x, y) lies in box (x1, y1 exclusive).

    >>> point_in_box(5, 5, (0, 0, 10, 10)), point_in_box(10, 5, (0, 0, 10, 10))
    (True, False)
    """
    return box[0] <= x < box[2] and box[1] <= y < box[3]


def pointing_hit(row: int, col: int, width: int, height: int, boxes, grid: int = GRID) -> bool:
    """Pointing game: does the centre of patch (row, col)'s original box fall in any of `boxes`?

    A patch that saw only padding is a miss.

    >>> pointing_hit(12, 5, 300, 200, [(60, 95, 80, 110)])   # centre (68.75, 106.25)
    True
    >>> pointing_hit(0, 0, 300, 200, [(0, 0, 300, 200)])     # padding
    False
    """
    box = patch_box_in_original(row, col, width, height, grid)
    if box is None:
        return False
    x, y = box_centre(box)
    return any(point_in_box(x, y, b) for b in boxes)


def boxes_area_fraction(boxes, width: int, height: int) -> float:
    """Share of the image's pixels inside the union of integer `boxes`: the pointing game's chance level.

    >>> boxes_area_fraction([(0, 0, 10, 10)], 100, 50)
    0.02
    >>> boxes_area_fraction([(0, 0, 10, 10), (5, 5, 15, 15)], 100, 50)   # union 175 px
    0.035
    """
    covered = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        covered[max(0, math.floor(y0)) : max(0, math.ceil(y1)), max(0, math.floor(x0)) : max(0, math.ceil(x1))] = True
    return float(covered.mean())
