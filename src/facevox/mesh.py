"""Mesh stage: occupancy volume → triangle mesh → the photo's frame, coloured.

Volumes are indexed [k, y, x] in crop pixels (k = depth away from the camera) and are full from the
visible surface to the back of the volume. Two meshes come out of one volume:

* the *surface*: the face as the camera sees it, a height field of the volume's front depth (where
  each column first crosses 0.5, sub-voxel; a vertex per crop pixel), in its large pieces;
* the *solid*: a closed, watertight body (marching cubes at 0.5, the face cut flat just behind its
  deepest visible point), for 3D printing.
"""

from __future__ import annotations

import numpy as np

from facevox.crop import invert
from facevox.face import Mesh
from facevox.rules import RULES

LEVEL = RULES["surface"]["level"]  # occupancy at the surface
OUTLINE_SLOPE = RULES["surface"]["outline_slope"]  # voxels of depth per pixel at most, along the face's outline (`limit_outline`)
OUTLINE_WIDTH = RULES["surface"]["outline_width"]  # pixels: how far inside the outline that limit starts
PIECE_SHARE = RULES["surface"]["piece_share"]  # surface pieces with at least this share of the largest one's triangles are kept
MAX_JUMP = RULES["surface"]["max_jump"]  # voxels: a surface triangle whose corners' depths differ by more spans a depth discontinuity (`drop_jumps`)


def _marching_cubes(volume: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes over the occupied part of a zero-padded volume → vertices (x, y, k), triangles."""
    from skimage.measure import marching_cubes

    occupied = volume > level
    if not occupied.any() or occupied.all():
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
    ks, ys, xs = (np.flatnonzero(occupied.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1)))
    k0, y0, x0 = max(ks[0] - 1, 0), max(ys[0] - 1, 0), max(xs[0] - 1, 0)
    part = volume[k0 : ks[-1] + 2, y0 : ys[-1] + 2, x0 : xs[-1] + 2]
    part = np.pad(part, 1)  # empty all round, so the surface closes
    vertices, triangles, _, _ = marching_cubes(part, level, allow_degenerate=False)
    vertices = vertices[:, ::-1] + np.array([x0, y0, k0]) - 1.0  # (k, y, x) → (x, y, k), undo crop and pad
    # With the axes swapped to (x, y, k), skimage's corner order gives normals out of the body.
    return vertices, triangles.astype(np.int64)


def face_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    a, b, c = (vertices[triangles[:, i]] for i in range(3))
    normals = np.cross(b - a, c - a)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def _main_pieces(vertices: np.ndarray, triangles: np.ndarray, share: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Keep the connected pieces with at least `share` of the largest piece's triangles (1.0: the
    largest alone) and drop unused vertices."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(triangles) == 0:
        return np.zeros((0, 3)), triangles
    edges = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]]])
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(len(vertices),) * 2)
    _, labels = connected_components(graph, directed=False)
    triangle_labels = labels[triangles[:, 0]]
    sizes = np.bincount(triangle_labels)
    return _used_only(vertices, triangles[sizes[triangle_labels] >= share * sizes.max()])


def _used_only(vertices: np.ndarray, triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The vertices some triangle uses, in their order, and the triangles renumbered onto them."""
    used, remap = np.unique(triangles, return_inverse=True)
    return vertices[used], remap.reshape(-1, 3).astype(np.int64)


def _smooth(vertices: np.ndarray, triangles: np.ndarray, iterations: int) -> np.ndarray:
    import trimesh

    if iterations <= 0 or len(triangles) == 0:
        return vertices
    body = trimesh.Trimesh(vertices, triangles, process=False)
    trimesh.smoothing.filter_taubin(body, lamb=0.5, nu=-0.53, iterations=iterations)
    return np.asarray(body.vertices)


def _back_cut(volume: np.ndarray, level: float, margin: float, percentile: float) -> int:
    """Depth index `margin` voxels behind a percentile of the visible surface's depths (below 100, a
    few stray deep columns are ignored)."""
    full = volume > level
    columns = full.any(axis=0)
    if not columns.any():
        return volume.shape[0] - 1
    front = full.argmax(axis=0)[columns]
    return min(int(np.percentile(front, percentile) + margin), volume.shape[0] - 1)


def front_depth(volume: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """(D, h, w) occupancy → the depth (h, w) of the visible surface (+inf off the face) and the face
    mask (h, w): the columns with a voxel above `level`.

    The depth is where a column first crosses `level`, linearly interpolated between the two voxels
    that straddle the crossing (the voxel in front of the first one counts as empty). On the targets'
    unit ramps (`training.voxels.occupancy`) this is within 0.09 voxel of the true depth; on the
    network's softer ramps it changes smoothly from column to column.
    """
    full = volume > level
    mask = full.any(axis=0)
    rows, cols = np.nonzero(mask)
    k = full.argmax(axis=0)[rows, cols]
    after = volume[k, rows, cols].astype(np.float64)
    before = np.where(k > 0, volume[np.maximum(k - 1, 0), rows, cols], 0.0)
    depth = np.full(mask.shape, np.inf)
    depth[rows, cols] = k - 1 + (level - before) / (after - before)
    return depth, mask


def height_field(depth: np.ndarray, mask: np.ndarray) -> Mesh:
    """A mesh of a depth map in crop coordinates: a vertex (x, y, depth) at every masked pixel; each
    2×2 block of pixels gives two triangles when all four are masked, one when three are."""
    h, w = mask.shape
    # Flat indices over the mask with an empty column on the right and an empty row below: a block's
    # corners are p, p + 1, p + row and p + row + 1, and none wraps into the next row.
    row = w + 1
    padded = np.zeros((h + 1, row), bool)
    padded[:h, :w] = mask
    flat = padded.ravel()
    pixels = np.flatnonzero(flat)
    ids = np.full(flat.size, -1, np.int64)
    ids[pixels] = np.arange(len(pixels))
    vertices = np.empty((len(pixels), 3))
    vertices[:, 1], vertices[:, 0] = np.divmod(pixels, row)
    vertices[:, 2] = depth[mask]
    tl, tr, bl, br = flat[: -row - 1], flat[1:-row], flat[row:-1], flat[row + 1 :]
    # Corners ordered so that normals face the camera (−z); the last two triangles need the block's
    # fourth corner absent. Each is made (3, n), corner by corner: numpy runs along the triangles.
    triangles = [ids.take(np.add.outer(corners, np.flatnonzero(present))) for corners, present in (
        ((0, row, 1), tl & bl & tr), ((1, row, row + 1), tr & bl & br),
        ((0, row + 1, 1), tl & br & tr & ~bl), ((0, row, row + 1), tl & bl & br & ~tr))]
    return Mesh(vertices, np.concatenate([corners.T for corners in triangles]))


def limit_outline(depth: np.ndarray, mask: np.ndarray, slope: float = OUTLINE_SLOPE, width: int = OUTLINE_WIDTH) -> np.ndarray:
    """The depth map with the columns near the face's outline pulled forward, ring by ring from
    `width` pixels inside it outwards, so that none lies more than `slope` voxels behind its
    shallowest neighbour further in. Columns along the outline first cross 0.5 far back, each at its
    own depth, which would make spikes; steep parts inside the face (occlusion edges) are kept.

    A ring is the pixels of the mask with a done pixel beside them (4-neighbours); each is limited by
    its shallowest done pixel among its 8 neighbours. Only the band outside the eroded mask is visited."""
    inside = np.pad(mask, 1)  # an empty border: every neighbour of a mask pixel has a flat index
    limited = np.pad(depth, 1, constant_values=np.inf)
    done = inside.copy()
    for _ in range(width):  # erosion by the 4-neighbour cross; the border stays empty
        done[1:-1, 1:-1] = done[1:-1, 1:-1] & done[:-2, 1:-1] & done[2:, 1:-1] & done[1:-1, :-2] & done[1:-1, 2:]
    done = done.ravel()
    depths, row = limited.ravel(), inside.shape[1]
    known = np.where(done, depths, np.inf)  # the depths of done pixels
    sides = np.array([-row, -1, 1, row])
    around = np.array([-row - 1, -row, -row + 1, -1, 1, row - 1, row, row + 1])
    todo = np.flatnonzero(inside.ravel() & ~done)
    while True:
        touching = done[todo[:, None] + sides].any(axis=1)
        ring = todo[touching]
        if not len(ring):
            return limited[1:-1, 1:-1]
        depths[ring] = np.minimum(depths[ring], known[ring[:, None] + around].min(axis=1) + slope)
        known[ring], done[ring] = depths[ring], True
        todo = todo[~touching]


def large_pieces(mask: np.ndarray, share: float = PIECE_SHARE) -> np.ndarray:
    """The pixels of a mask whose height field (`height_field`) pieces have at least `share` of the
    largest piece's triangles: the mask for the height field of those pieces alone.

    Pieces are found on the grid of 2×2 blocks (one with three or four masked pixels has triangles,
    and uses each of them): blocks side by side share two pixels, one of them masked, so they are
    always joined; diagonal blocks share one pixel, and are joined when it is masked."""
    from scipy import ndimage

    corners = mask[:-1, :-1].astype(np.uint8) + mask[:-1, 1:] + mask[1:, :-1] + mask[1:, 1:]
    kept = corners >= 3
    pieces, count = ndimage.label(kept)
    if count > 1:
        shared = mask[1:-1, 1:-1]
        starts, ends = [], []
        for a, b in ((pieces[:-1, :-1], pieces[1:, 1:]), (pieces[:-1, 1:], pieces[1:, :-1])):  # diagonal neighbours
            join = shared & (a > 0) & (b > 0) & (a != b)
            starts.append(a[join])
            ends.append(b[join])
        starts, ends = np.concatenate(starts), np.concatenate(ends)
        if len(starts):
            from scipy.sparse import coo_matrix
            from scipy.sparse.csgraph import connected_components

            graph = coo_matrix((np.ones(len(starts)), (starts, ends)), shape=(count + 1,) * 2)
            pieces = connected_components(graph, directed=False)[1][pieces]
        sizes = np.bincount(pieces.ravel(), weights=np.maximum(corners, 2).ravel() - 2)  # triangles per piece
        kept &= (sizes >= share * sizes.max())[pieces]
    used = np.zeros_like(mask)  # the pixels of the kept blocks
    used[:-1, :-1] |= kept
    used[:-1, 1:] |= kept
    used[1:, :-1] |= kept
    used[1:, 1:] |= kept
    return used & mask


def surface_mesh(volume: np.ndarray, level: float = LEVEL) -> Mesh:
    """The visible face surface in crop coordinates (x, y, k): the height field of the volume's front
    depth (`front_depth`), see `surface_from_depth`."""
    return surface_from_depth(*front_depth(volume, level))


def surface_from_depth(depth: np.ndarray, mask: np.ndarray, outline_slope: float | None = OUTLINE_SLOPE) -> Mesh:
    """The surface from a front depth map and its mask: a height field, outline spikes limited by
    `limit_outline` at `outline_slope` (None: not limited; bench/outline_limit.py), in its large pieces
    (`large_pieces`: small islands of stray columns are left out), without triangles across depth
    discontinuities (`drop_jumps`). Made on the mask's bounding box."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return Mesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64))
    box = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
    limited = depth[box] if outline_slope is None else limit_outline(depth[box], mask[box], outline_slope)
    surface = drop_jumps(height_field(limited, large_pieces(mask[box])))
    surface.vertices[:, :2] += (cols[0], rows[0])
    return surface


def drop_jumps(surface: Mesh, max_jump: float = MAX_JUMP) -> Mesh:
    """The surface without its triangles whose corners' depths differ by more than `max_jump` voxels,
    and without the vertices left unused: such a triangle joins two sides of a depth discontinuity (the
    line between the lips or the far cheek behind the nose on a turned face), which made thin spikes
    and walls backwards. The pieces this separates all stay (the side of the neck behind the jaw, seen
    on a profile, is one)."""
    keep = np.ptp(surface.vertices[:, 2][surface.triangles], axis=1) <= max_jump
    if keep.all():
        return surface
    return Mesh(*_used_only(surface.vertices, surface.triangles[keep]))


def solid_mesh(volume: np.ndarray, level: float = LEVEL, smooth_iterations: int = 10, back_margin: float = 4.0) -> Mesh:
    """A closed body in crop coordinates: the face, cut flat `back_margin` voxels behind its deepest
    visible point, so that a printer gets a solid relief with a flat back."""
    vertices, triangles = _marching_cubes(volume[: _back_cut(volume, level, back_margin, percentile=99) + 1], level)
    vertices, triangles = _main_pieces(vertices, triangles)
    return Mesh(_smooth(vertices, triangles, smooth_iterations), triangles)


def points_to_photo(points: np.ndarray, crop_matrix: np.ndarray) -> np.ndarray:
    """(n, 3) crop coordinates (x, y, k) → photo frame (x, y pixels; z = depth in photo pixels)."""
    back = invert(crop_matrix)
    scale = float(np.sqrt(abs(np.linalg.det(crop_matrix[:, :2]))))  # crop pixels per photo pixel
    photo = np.empty((len(points), 3))
    photo[:, :2] = points[:, :2] @ back[:, :2].T + back[:, 2]
    photo[:, 2] = points[:, 2] / scale
    return photo


def to_photo(mesh: Mesh, crop_matrix: np.ndarray) -> Mesh:
    """A mesh in crop coordinates moved to the photo frame."""
    return Mesh(points_to_photo(mesh.vertices, crop_matrix), mesh.triangles, mesh.colours)


def colour_from_photo(mesh: Mesh, image: np.ndarray) -> Mesh:
    """Per-vertex colours sampled bilinearly from the photo at each vertex's (x, y) in photo pixels."""
    height, width, channels = image.shape
    x = np.clip(mesh.vertices[:, 0], 0, width - 1)
    y = np.clip(mesh.vertices[:, 1], 0, height - 1)
    x0, y0 = np.minimum(x.astype(np.int64), width - 2).clip(0), np.minimum(y.astype(np.int64), height - 2).clip(0)
    fx, fy = x - x0, y - y0
    gx, gy = 1 - fx, 1 - fy
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    values = image.reshape(-1)
    starts = [(row * width + col) * channels for row, col in ((y0, x0), (y0, x1), (y1, x0), (y1, x1))]
    colours = np.empty((len(x), channels), np.uint8)
    # Channel by channel: numpy runs many times faster along the vertices than across three channels.
    for channel in range(channels):
        top_left, top_right, bottom_left, bottom_right = (values[channel:].take(start) for start in starts)
        top = top_left * gx + top_right * fx
        bottom = bottom_left * gx + bottom_right * fx
        colours[:, channel] = np.clip(top * gy + bottom * fy + 0.5, 0, 255)
    return Mesh(mesh.vertices, mesh.triangles, colours)


def decimate(mesh: Mesh, max_triangles: int) -> Mesh:
    """About `max_triangles` triangles (quadric decimation, fast-simplification; the outline is kept,
    so a mesh with a long ragged outline keeps somewhat more); colours carried to the kept vertices."""
    import trimesh

    if len(mesh.triangles) <= max_triangles:
        return mesh
    body = trimesh.Trimesh(mesh.vertices, mesh.triangles, process=False)
    simpler = body.simplify_quadric_decimation(face_count=max_triangles)
    colours = None
    if mesh.colours is not None:
        from scipy.spatial import cKDTree

        _, nearest = cKDTree(mesh.vertices).query(simpler.vertices)
        colours = mesh.colours[nearest]
    return Mesh(np.asarray(simpler.vertices), np.asarray(simpler.faces, dtype=np.int64), colours)
