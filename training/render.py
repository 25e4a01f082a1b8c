"""A batched point-splat rasteriser in torch: meshes in crop pixels → colour, depth and coverage.

Each triangle is sampled densely (barycentric grid); every sample writes to its pixel, the nearest
sample (smallest depth) wins. With samples closer than a pixel apart this gives the visible surface
without a triangle rasteriser, and it runs on the GPU for a whole batch at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def barycentric_grid(subdivisions: int) -> torch.Tensor:
    """(s, 3) barycentric weights of a regular grid over a triangle."""
    steps = [(i, j) for i in range(subdivisions + 1) for j in range(subdivisions + 1 - i)]
    weights = torch.tensor([(i, j, subdivisions - i - j) for i, j in steps], dtype=torch.float32)
    return weights / subdivisions


def vertex_normals(vertices: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """Unit vertex normals (b, n, 3), area-weighted, oriented as the triangles are wound."""
    a, b, c = (vertices[:, triangles[:, i]] for i in range(3))
    face_normals = torch.cross(b - a, c - a, dim=-1)
    normals = torch.zeros_like(vertices)
    for i in range(3):
        normals.index_add_(1, triangles[:, i], face_normals)
    return F.normalize(normals, dim=-1)


def facing_camera(vertices: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """(b, t) bool: the triangles of (b, n, 3) crop-pixel vertices (x right, y down) that face the camera,
    for meshes wound outwards."""
    corners = vertices[:, triangles]  # (b, t, 3, 3)
    edge1, edge2 = corners[:, :, 1, :2] - corners[:, :, 0, :2], corners[:, :, 2, :2] - corners[:, :, 0, :2]
    return edge1[..., 0] * edge2[..., 1] - edge1[..., 1] * edge2[..., 0] < 0


def splat(
    vertices: torch.Tensor,
    triangles: torch.Tensor,
    colours: torch.Tensor,
    size: int,
    subdivisions: int | torch.Tensor = 8,
    keep: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render (b, n, 3) vertices (x, y in pixels, z = depth, larger is farther) with (b, n, c) colours.
    subdivisions: of every triangle's sides, or (t,) one number per triangle (small ones need fewer
    samples); keep (b, t) bool, optional: the triangles drawn in each image (default all).

    Returns image (b, c, size, size), depth (b, size, size) with +inf where empty, and the
    coverage mask (b, size, size) bool.
    """
    batch, channels = vertices.shape[0], colours.shape[-1]
    if keep is None:
        keep = torch.ones(batch, len(triangles), dtype=torch.bool, device=vertices.device)
    image_of, triangle_of = keep.nonzero(as_tuple=True)
    levels = torch.as_tensor(subdivisions, device=vertices.device).expand(len(triangles))[triangle_of]
    # Samples grouped by level; colours are interpolated later, for the winning samples only.
    points, point_owner, owners, corner_ids, weights, blocks = [], [], [], [], [], []
    samples = triangles_so_far = rows_so_far = 0
    for level in levels.unique().tolist():
        grid = barycentric_grid(level).to(vertices)
        chosen = levels == level
        owner, ids = image_of[chosen], triangles[triangle_of[chosen]]  # (k,), (k, 3)
        points.append(torch.einsum("sj,kjd->ksd", grid, vertices[owner[:, None], ids]).reshape(-1, 3))
        point_owner.append(owner.repeat_interleave(len(grid)))
        owners.append(owner)
        corner_ids.append(ids)
        weights.append(grid)
        count = len(owner) * len(grid)
        blocks.append((samples, count, len(grid), triangles_so_far, rows_so_far))
        samples, triangles_so_far, rows_so_far = samples + count, triangles_so_far + len(owner), rows_so_far + len(grid)
    points, point_owner = torch.cat(points), torch.cat(point_owner)
    owner, corner_ids, weights = torch.cat(owners), torch.cat(corner_ids), torch.cat(weights)
    column, row = points[:, 0].round().long(), points[:, 1].round().long()
    inside = (column >= 0) & (column < size) & (row >= 0) & (row < size)
    pixel = torch.where(inside, row * size + column, size * size)  # the extra slot takes outsiders
    pixel = pixel + point_owner * (size * size + 1)
    depth = points[:, 2]
    slots = batch * (size * size + 1)
    zbuffer = torch.full((slots,), float("inf"), device=depth.device)
    zbuffer.scatter_reduce_(0, pixel, depth, reduce="amin")
    winners = (depth <= zbuffer[pixel]).nonzero()[:, 0]
    # Each winning sample's triangle and barycentric weights, from its index within its level's block.
    triangle, weight_row = torch.empty_like(winners), torch.empty_like(winners)
    for start, count, per_triangle, first_triangle, first_row in blocks:
        in_block = (winners >= start) & (winners < start + count)
        local = winners[in_block] - start
        triangle[in_block] = first_triangle + local // per_triangle
        weight_row[in_block] = first_row + local % per_triangle
    winner_colours = torch.einsum("kj,kjc->kc", weights[weight_row], colours[owner[triangle, None], corner_ids[triangle]])
    image = torch.zeros(slots, channels, device=depth.device, dtype=colours.dtype)
    image[pixel[winners]] = winner_colours.to(colours.dtype)
    zbuffer = zbuffer.reshape(batch, size * size + 1)[:, :-1].reshape(batch, size, size)
    image = image.reshape(batch, size * size + 1, channels)[:, :-1]
    image = image.reshape(batch, size, size, channels).permute(0, 3, 1, 2)
    return _fill_holes(image, zbuffer)


def _fill_holes(image: torch.Tensor, depth: torch.Tensor):
    """Fill single empty pixels surrounded by surface (splat gaps) from their nearest neighbours."""
    empty = torch.isinf(depth)
    near = -F.max_pool2d(-torch.where(empty, torch.full_like(depth, 1e6), depth)[:, None], 3, 1, 1)[:, 0]
    covered_around = F.avg_pool2d((~empty).float()[:, None], 3, 1, 1)[:, 0] > 0.6
    hole = empty & covered_around
    depth = torch.where(hole, near, depth)
    blurred = F.avg_pool2d(torch.where(empty[:, None], 0.0, image), 3, 1, 1)
    weight = F.avg_pool2d((~empty).float()[:, None], 3, 1, 1).clamp_min(1e-6)
    image = torch.where(hole[:, None], blurred / weight, image)
    return image, depth, ~torch.isinf(depth)
