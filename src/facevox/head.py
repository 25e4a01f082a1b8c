"""An animatable head: the ICT FaceKit model fitted to a reconstruction, with a UV texture from the photo.

    from facevox.head import fit_head
    head = fit_head(face, photo_rgb)   # face from facevox.reconstruct, photo_rgb the (h, w, 3) uint8 photo

Every head has the same vertices, triangles and UVs (the packed model, `load_model`); the fit finds
identity coefficients (N(0, 1) prior), 53 ARKit expression weights in [0, 1] (small, sparse) and a
similarity pose from the network's own output: its 68 landmarks (3D) and its front depth (the
surface it saw), point-to-plane on a fixed subset of face vertices facing the camera. The model
completes what the camera did not see. The texture is the photo where the head faces the camera
unoccluded, the mirror side where it does not, then the skin tone.

The model data (`models/ict_head.npz`, packed by `training/pack_ict.py`) is derived from the ICT
FaceKit (USC ICT, MIT licence, `models/ICT-FaceKit-LICENSE.txt`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np

MODEL_PATH = Path(__file__).parent / "models" / "ict_head.npz"
TEXTURE_SIZE = 1024
JAW = np.arange(17)  # iBUG-68 jaw contour: weighted less (its convention may differ from the network's)


@dataclass
class Head:
    """A fitted head in the photo frame of facevox (x right, y down, z away from the camera; pixels).

    vertices (n, 3) float32 include the fitted expression (`neutral_vertices` without it); faces (m, 3)
    int32, wound so normals point out of the head; uvs (n, 2) float32 in [0, 1], OBJ convention (v up:
    texel row = (1 - v) · T); texture (T, T, 3) uint8 RGB; blendshapes (53, n, 3) float32 offsets in
    the frame of `vertices`, named by blendshape_names (ARKit); identity (k,) coefficients (N(0, 1)
    prior); expression (53,) weights in [0, 1]; regions: vertex ids of 'face', 'eyes', 'mouth_interior'
    and 'landmarks68' (68 ids in iBUG order). `scale` is photo pixels per millimetre of the model.
    """

    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    texture: np.ndarray
    blendshape_names: list[str]
    blendshapes: np.ndarray
    identity: np.ndarray
    expression: np.ndarray
    regions: dict[str, np.ndarray]
    scale: float = 1.0

    @property
    def neutral_vertices(self) -> np.ndarray:
        """The vertices with every expression weight at 0."""
        return self.vertices - np.tensordot(self.expression, self.blendshapes, axes=1).astype(np.float32)

    @property
    def landmarks_3d(self) -> np.ndarray:
        """(68, 3) the head's landmark vertices (iBUG order), in the photo frame."""
        return self.vertices[self.regions["landmarks68"]]


@dataclass
class HeadModel:
    """The packed ICT head (millimetres, model frame: x to the subject's left, y up, z out of the face).

    neutral, identity, expression are per *source* vertex; `vertex_source` maps each (UV-split) vertex
    to its source vertex. mirror: each vertex's twin across the face's mid-plane."""

    neutral: np.ndarray  # (s, 3) float32
    identity: np.ndarray  # (k, s, 3) float32
    expression: np.ndarray  # (53, s, 3) float32
    expression_names: list[str]
    vertex_source: np.ndarray  # (n,)
    uvs: np.ndarray  # (n, 2)
    triangles: np.ndarray  # (m, 3)
    mirror: np.ndarray  # (n,)
    landmarks68: np.ndarray  # (68,) vertex ids
    fit_samples: np.ndarray  # vertex ids of the dense fit
    regions: dict[str, np.ndarray]

    def shape(self, identity: np.ndarray, expression: np.ndarray) -> np.ndarray:
        """(n, 3) vertices in model millimetres for the given coefficients."""
        weights = np.zeros(len(self.basis), np.float32)
        weights[: len(identity)] = identity
        weights[len(self.identity):] = expression
        source = self.neutral.ravel() + weights @ self.basis.reshape(len(self.basis), -1)
        return source.reshape(-1, 3)[self.vertex_source]

    @cached_property
    def basis(self) -> np.ndarray:
        """(k + 53, s, 3) float32: identity modes then expressions."""
        return np.concatenate([self.identity, self.expression])

    @cached_property
    def fit_data(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The landmark vertices then the dense samples: mean (p, 3), basis (p, 3, k + 53) float64,
        and the samples' outward normals on the mean head (model frame)."""
        source = self.vertex_source[np.r_[self.landmarks68, self.fit_samples]]
        normals = _vertex_normals(self.neutral[self.vertex_source].astype(np.float64), self.triangles)[self.fit_samples]
        return self.neutral[source].astype(np.float64), self.basis[:, source].transpose(1, 2, 0).astype(np.float64), normals


@lru_cache(maxsize=2)
def load_model(path: str | Path = MODEL_PATH) -> HeadModel:
    """The packed head model (read once, cached)."""
    data = np.load(path)
    return HeadModel(
        neutral=data["neutral"].astype(np.float32),
        identity=data["identity"].astype(np.float32) * data["identity_scale"][:, None, None],
        expression=data["expression"].astype(np.float32) * data["expression_scale"][:, None, None],
        expression_names=[str(n) for n in data["expression_names"]],
        vertex_source=data["vertex_source"].astype(np.int64), uvs=data["uvs"], triangles=data["triangles"],
        mirror=data["mirror"].astype(np.int64), landmarks68=data["landmarks68"].astype(np.int64),
        fit_samples=data["fit_samples"].astype(np.int64),
        regions={name: data["region_" + name].astype(np.int64) for name in ("face", "eyes", "mouth_interior")},
    )


@dataclass
class Fit:
    """Coefficients and pose: a model point m (mm) lies at scale · rotation @ m + translation."""

    identity: np.ndarray
    expression: np.ndarray
    scale: float
    rotation: np.ndarray
    translation: np.ndarray

    def place(self, points: np.ndarray) -> np.ndarray:
        return self.scale * points @ self.rotation.T + self.translation


def fit_head(face, photo_rgb: np.ndarray, model: HeadModel | None = None, texture_size: int = TEXTURE_SIZE) -> Head:
    """The head fitted to a facevox.Face (its landmarks_3d and its surface mesh, through the crop
    matrix in face.extras) and textured from the photo (h, w, 3) uint8 RGB."""
    from facevox.mesh import points_to_photo

    model = model or load_model()
    crop_matrix = np.asarray(face.extras["crop_matrix"], dtype=np.float64)
    landmarks, depth = crop_frame_inputs(face, crop_matrix)
    fit = fit_surface(model, landmarks, depth)
    crop_vertices = fit.place(model.shape(fit.identity, fit.expression))
    vertices = points_to_photo(crop_vertices, crop_matrix)
    scale = vertices_scale(crop_matrix) * fit.scale
    rotation = photo_rotation(crop_matrix) @ fit.rotation
    blendshapes = scale * model.expression[:, model.vertex_source] @ rotation.T
    texture = make_texture(model, vertices, photo_rgb, texture_size, scale, _surface_weight(depth, crop_matrix))
    regions = dict(model.regions, landmarks68=model.landmarks68)
    return Head(
        vertices=vertices.astype(np.float32), faces=model.triangles.astype(np.int32), uvs=model.uvs.astype(np.float32),
        texture=texture, blendshape_names=list(model.expression_names), blendshapes=blendshapes.astype(np.float32),
        identity=fit.identity.astype(np.float32), expression=fit.expression.astype(np.float32), regions=regions,
        scale=float(scale),
    )


def _surface_weight(depth: np.ndarray, crop_matrix: np.ndarray, margin: int = 5):
    """(x, y) photo pixels → weight in [0, 1]: 1 well inside the network's surface, 0 outside it."""
    import cv2

    inside = np.isfinite(depth).astype(np.float32)
    inside = cv2.GaussianBlur(cv2.erode(inside, np.ones((2 * margin + 1,) * 2, np.uint8)), (0, 0), margin / 2)
    inside = np.pad(inside, 1)  # a zero border, which points off the crop take (the sampling clamps)

    def weight(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        crop = np.stack([x, y], 1) @ crop_matrix[:2, :2].T + crop_matrix[:2, 2] + 1
        return _bilinear(inside[:, :, None], crop[:, 0], crop[:, 1])[:, 0]

    return weight


def vertices_scale(crop_matrix: np.ndarray) -> float:
    """Photo pixels per crop pixel."""
    return 1.0 / float(np.sqrt(abs(np.linalg.det(crop_matrix[:2, :2]))))


def photo_rotation(crop_matrix: np.ndarray) -> np.ndarray:
    """The rotation part of the crop → photo map (crop matrices are similarities; z is kept)."""
    from facevox.crop import invert

    turn = np.eye(3)
    turn[:2, :2] = invert(crop_matrix)[:2, :2] / vertices_scale(crop_matrix)
    return turn


def crop_frame_inputs(face, crop_matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The face's landmarks_3d (68, 3) and its surface as a depth map (+inf off the face), both in
    the crop frame (where the surface has a vertex per pixel)."""
    zoom = 1.0 / vertices_scale(crop_matrix)

    def to_crop(points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, dtype=np.float64)
        return np.c_[points[:, :2] @ crop_matrix[:2, :2].T + crop_matrix[:2, 2], points[:, 2] * zoom]

    return to_crop(face.landmarks_3d), depth_grid(to_crop(face.mesh.vertices))


def depth_grid(points: np.ndarray) -> np.ndarray:
    """A height-field surface's vertices (x, y on whole pixels, z) → its depth map (+inf elsewhere)."""
    columns, rows = np.round(points[:, 0]).astype(np.int64), np.round(points[:, 1]).astype(np.int64)
    inside = (columns >= 0) & (rows >= 0)
    size = int(max(columns.max(initial=0), rows.max(initial=0), 1)) + 1  # 2 at least: depth gradients need it
    depth = np.full((size, size), np.inf)
    depth[rows[inside], columns[inside]] = points[inside, 2]
    return depth


def similarity(source: np.ndarray, target: np.ndarray, weights: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Weighted Umeyama: scale, rotation, translation that best map source points onto target points."""
    w = weights / weights.sum()
    mu_s, mu_t = w @ source, w @ target
    a, b = source - mu_s, target - mu_t
    u, sigma, vt = np.linalg.svd((b * w[:, None]).T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    flip = np.array([1.0, 1.0, d])
    rotation = u @ np.diag(flip) @ vt
    scale = float((sigma * flip).sum() / (w @ (a * a).sum(1)))
    return scale, rotation, mu_t - scale * rotation @ mu_s


# Fit weights. Residuals are in model millimetres (pixels / scale); each term is (residual / sigma)².
LANDMARK_SIGMA_MM = 2.0
LANDMARK_DEPTH_SHARE = 0.2  # landmark depth counts this much of x and y (the surface gives depth)
JAW_WEIGHT = 0.1
SURFACE_SIGMA_MM = 1.5
SURFACE_EFFECTIVE = 200.0  # the dense samples count as this many independent ones (they are correlated)
EXPRESSION_L2 = 4.0
EXPRESSION_L1 = 8.0
FACING = 0.2  # a sample is used where its normal's component towards the camera exceeds this


def _depth_sampler(depth: np.ndarray):
    """Bilinear depth and the unit normal (pointing away from the camera) of a depth map at (x, y);
    valid where all four neighbouring pixels are on the face."""
    h, w = depth.shape
    finite = np.isfinite(depth)
    filled = np.where(finite, depth, 0.0)
    gy, gx = np.gradient(np.where(finite, depth, np.nan))

    def sample(x: np.ndarray, y: np.ndarray):
        x0 = np.clip(np.floor(x).astype(np.int64), 0, w - 2)
        y0 = np.clip(np.floor(y).astype(np.int64), 0, h - 2)
        fx, fy = np.clip(x - x0, 0, 1), np.clip(y - y0, 0, 1)
        corners = [(y0, x0, (1 - fx) * (1 - fy)), (y0, x0 + 1, fx * (1 - fy)), (y0 + 1, x0, (1 - fx) * fy), (y0 + 1, x0 + 1, fx * fy)]
        valid = (x >= 0) & (y >= 0) & (x <= w - 1) & (y <= h - 1)
        z = np.zeros_like(x)
        dx = np.zeros_like(x)
        dy = np.zeros_like(x)
        for r, c, weight in corners:
            valid &= finite[r, c]
            z += weight * filled[r, c]
            dx += weight * gx[r, c]
            dy += weight * gy[r, c]
        valid &= np.isfinite(dx) & np.isfinite(dy)
        normal = np.stack([-dx, -dy, np.ones_like(x)], 1)
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
        return z, normal, valid

    return sample


def _solve_box(hessian: np.ndarray, gradient: np.ndarray, lower: np.ndarray, upper: np.ndarray, start: np.ndarray, rounds: int = 12) -> np.ndarray:
    """min ½ xᵀHx − gᵀx with lower ≤ x ≤ upper (H positive definite), by a small active-set loop."""
    x = np.clip(start, lower, upper)
    at_bound = (x <= lower) | (x >= upper)
    for _ in range(rounds):
        free = ~at_bound
        rhs = gradient[free] - hessian[np.ix_(free, at_bound)] @ x[at_bound]
        x[free] = np.linalg.solve(hessian[np.ix_(free, free)], rhs)
        outside = free & ((x < lower) | (x > upper))
        x = np.clip(x, lower, upper)
        push = gradient - hessian @ x  # the descent direction of each coordinate
        release = at_bound & (((x <= lower) & (push > 0)) | ((x >= upper) & (push < 0)))
        if not outside.any() and not release.any():
            break
        at_bound = (at_bound | outside) & ~release
    return x


def fit_surface(model: HeadModel, landmarks: np.ndarray, depth: np.ndarray, iterations: int = 6) -> Fit:
    """Fit identity, expression and a similarity pose to 68 landmarks (68, 3) and a depth map (h, w)
    (+inf off the face), both in one frame: x right, y down (pixels of the depth map), z away from
    the camera in the same unit."""
    k, e = len(model.identity), len(model.expression)
    mean, basis, normals0 = model.fit_data
    n_lm = len(model.landmarks68)
    sampler = _depth_sampler(depth)

    lm_weight = np.ones(n_lm)
    lm_weight[JAW] = JAW_WEIGHT
    axis_weight = np.array([1.0, 1.0, LANDMARK_DEPTH_SHARE])
    prior = np.r_[np.ones(k), np.full(e, EXPRESSION_L2)]
    linear = np.r_[np.zeros(k), np.full(e, -EXPRESSION_L1 / 2)]
    lower, upper = np.r_[np.full(k, -np.inf), np.zeros(e)], np.r_[np.full(k, np.inf), np.ones(e)]
    coefficients = np.zeros(k + e)

    # Start: the mean head's landmarks onto the observed ones (the frontal model frame flipped to y down, z away).
    scale, rotation, translation = similarity(mean[:n_lm], landmarks, lm_weight)
    for _ in range(iterations):
        shape = mean + basis @ coefficients
        placed = scale * shape @ rotation.T + translation
        # Dense correspondences: each sample facing the camera meets the depth map where it projects.
        samples = placed[n_lm:]
        facing = (normals0 @ rotation.T)[:, 2] < -FACING
        z, normal, valid = sampler(samples[:, 0], samples[:, 1])
        gap = (samples[:, 2] - z) * normal[:, 2]  # point-to-plane distance, pixels
        valid &= facing
        if valid.any():
            limit = max(3.0 * np.median(np.abs(gap[valid])), 2.0 * scale)  # at least 2 mm
            valid &= np.abs(gap) < limit
        used = np.flatnonzero(valid)
        dense_weight = np.sqrt(SURFACE_EFFECTIVE / max(len(used), 1)) / SURFACE_SIGMA_MM
        targets = np.c_[samples[used, 0], samples[used, 1], z[used]]

        # Coefficients, pose fixed: residuals in millimetres (pixels / scale), linear in the coefficients.
        lm_rows = ((rotation @ basis[:n_lm]) * (lm_weight[:, None] ** 0.5 * axis_weight / LANDMARK_SIGMA_MM)[:, :, None]).reshape(-1, k + e)
        lm_rhs = (((landmarks - translation) / scale - mean[:n_lm] @ rotation.T) * (lm_weight[:, None] ** 0.5 * axis_weight / LANDMARK_SIGMA_MM)).ravel()
        # n · R B c = (Rᵀ n) · B c: the normals turned into the model frame, not the basis out of it.
        dense_rows = (normal[used] @ rotation)[:, None, :] @ basis[n_lm + used]
        dense_rows = dense_rows[:, 0] * dense_weight
        dense_rhs = np.einsum("pi,pi->p", normal[used], (targets - translation) / scale - mean[n_lm:][used] @ rotation.T) * dense_weight
        rows = np.concatenate([lm_rows, dense_rows])
        rhs = np.concatenate([lm_rhs, dense_rhs])
        hessian = rows.T @ rows + np.diag(prior)
        coefficients = _solve_box(hessian, rows.T @ rhs + linear, lower, upper, coefficients)

        # Pose, coefficients fixed: landmarks and the dense samples' closest points on their tangent planes.
        shape = mean + basis @ coefficients
        placed = scale * shape @ rotation.T + translation
        on_plane = placed[n_lm:][used] - normal[used] * np.einsum("pi,pi->p", normal[used], placed[n_lm:][used] - targets)[:, None]
        weights = np.r_[lm_weight, np.full(len(used), dense_weight**2 * LANDMARK_SIGMA_MM**2)]
        source_points = np.concatenate([shape[:n_lm], shape[n_lm:][used]])
        target_points = np.concatenate([landmarks, on_plane])
        scale, rotation, translation = similarity(source_points, target_points, weights)
    return Fit(coefficients[:k], coefficients[k:], scale, rotation, translation)


def _vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    a, b, c = (vertices[triangles[:, i]] for i in range(3))
    face_normals = np.cross(b - a, c - a)
    normals = np.stack([sum(np.bincount(triangles[:, i], face_normals[:, axis], len(vertices)) for i in range(3)) for axis in range(3)], 1)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


# Texture: what each texel shows and how the sources are blended.
FACING_LOW, FACING_HIGH = 0.15, 0.5  # the photo's weight ramps up as a normal turns towards the camera
OCCLUSION_MM = 3.0  # a point this far behind the nearest surface at its pixel is hidden
BLEND_TEXELS = 6  # weights are eroded, then blurred, over this many texels (no visible seam)
EYE_COLOUR = (225, 222, 218)
MOUTH_COLOUR = (95, 45, 45)
_rasters: dict = {}


def uv_raster(model: HeadModel, size: int = TEXTURE_SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each texel (row-major, T·T) the triangle whose UV triangle holds its centre (−1 for none)
    and its barycentric weights (T·T, 3); and for every texel the nearest covered texel (for the
    gutter). Computed once per model and size."""
    key = (id(model), size)
    if key not in _rasters:
        import cv2
        from scipy.ndimage import distance_transform_edt

        corners = np.stack([model.uvs[:, 0] * size - 0.5, (1 - model.uvs[:, 1]) * size - 0.5], 1)[model.triangles].astype(np.float64)
        # Each triangle filled with its number + 1 (cv2 covers every texel the triangle touches).
        ids = np.zeros((size, size), np.int32)
        fixed = np.round(corners * 16).astype(np.int32)  # 4 bits of sub-texel precision
        for number, triangle in enumerate(fixed, start=1):
            cv2.fillConvexPoly(ids, triangle, number, lineType=cv2.LINE_8, shift=4)
        # Texels a triangle overlaps without holding their centre (slivers, island borders) take it
        # where no triangle holds them, so every point of every UV triangle lands on its own texels.
        low = np.clip(np.round(corners.min(1)), 0, size - 1).astype(np.int64)
        extent = np.clip(np.round(corners.max(1)), 0, size - 1).astype(np.int64) - low + 1
        counts = extent[:, 0] * extent[:, 1]
        owner = np.repeat(np.arange(len(corners)), counts)
        local = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        touched = (low[owner, 1] + local // extent[owner, 0]) * size + low[owner, 0] + local % extent[owner, 0]
        flat = ids.ravel()
        empty = flat[touched] == 0
        flat[touched[empty]] = owner[empty] + 1
        triangles = flat.astype(np.int64) - 1
        texel = np.flatnonzero(triangles >= 0)
        a, b, c = (corners[triangles[texel], i] for i in range(3))
        p = np.stack([texel % size, texel // size], 1).astype(np.float64)
        v0, v1, v2 = b - a, c - a, p - a
        denominator = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
        denominator = np.where(np.abs(denominator) < 1e-12, 1e-12, denominator)
        wb = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / denominator
        wc = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / denominator
        # Texels along an edge whose centres lie just outside take the triangle's nearest point.
        wb, wc = np.clip(wb, 0, 1), np.clip(wc, 0, 1)
        total = np.maximum(wb + wc, 1.0)
        wb, wc = wb / total, wc / total
        weights = np.zeros((size * size, 3), np.float32)
        weights[texel] = np.stack([1 - wb - wc, wb, wc], 1)
        covered = (triangles >= 0).reshape(size, size)
        nearest = distance_transform_edt(~covered, return_distances=False, return_indices=True)
        _rasters[key] = (triangles, weights, (nearest[0] * size + nearest[1]).ravel())
    return _rasters[key]


def _texel_matrices(model: HeadModel, size: int):
    """The covered texels and two sparse (texels × vertices) matrices of barycentric weights: a
    texel's point from the vertices, and its mirror twin's point (the same weights on the twins)."""
    key = ("matrices", id(model), size)
    if key not in _rasters:
        from scipy.sparse import csr_matrix

        triangles, weights, _ = uv_raster(model, size)
        texels = np.flatnonzero(triangles >= 0)
        corners = model.triangles[triangles[texels]]
        rows = np.repeat(np.arange(len(texels)), 3)
        shape = (len(texels), len(model.uvs))
        values = weights[texels].ravel()
        _rasters[key] = (texels, csr_matrix((values, (rows, corners.ravel())), shape),
                         csr_matrix((values, (rows, model.mirror[corners].ravel())), shape))
    return _rasters[key]


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(n, c) float32 bilinear samples of an (h, w, c) image at (x, y), clamped to its border."""
    import cv2

    rows = -(-len(x) // 1024)  # remap wants maps under 32767 a side: fold the points into rows of 1024
    maps = np.zeros((2, rows * 1024), np.float32)
    maps[0, : len(x)], maps[1, : len(x)] = x, y
    mapped = cv2.remap(image, maps[0].reshape(rows, 1024), maps[1].reshape(rows, 1024), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return mapped.reshape(rows * 1024, -1)[: len(x)].astype(np.float32)


def make_texture(model: HeadModel, vertices: np.ndarray, photo_rgb: np.ndarray, size: int = TEXTURE_SIZE, scale: float = 1.0, allowed=None) -> np.ndarray:
    """(size, size, 3) uint8 texture of the head at `vertices` (photo frame; `scale` photo pixels per
    mm) from the photo: each texel takes the photo where its point faces the camera unoccluded (and
    `allowed(x, y)` → weight in [0, 1], if given, allows it), else its mirror twin's point, else a
    fill colour (skin tone from the photo; eyes and mouth interior their own); blended smoothly."""
    import cv2

    triangles, weights, nearest = uv_raster(model, size)
    texels, own_matrix, twin_matrix = _texel_matrices(model, size)
    corner_ids = model.triangles[triangles[texels]]  # (N, 3)
    vertices = np.asarray(vertices, dtype=np.float64)
    normals = _vertex_normals(vertices, model.triangles).astype(np.float32)
    vertices = vertices.astype(np.float32)  # per texel, float32 is ample and twice as fast

    points, twins = own_matrix @ vertices, twin_matrix @ vertices
    # A z-buffer of the head itself, splatted from its vertices and triangle centres, in cells about
    # as wide as the face's triangles in the photo (so that it has no holes on the face).
    centres = vertices[model.triangles].mean(1)
    splats = np.concatenate([vertices, centres])
    edges = np.linalg.norm(vertices[model.triangles[:, 0]] - vertices[model.triangles[:, 1]], axis=1)
    cell = max(1.0, 1.5 * float(np.median(edges)))
    low = splats[:, :2].min(0)
    shape = (np.ptp(splats[:, :2], axis=0) / cell).astype(np.int64) + 1

    def cells(p: np.ndarray) -> np.ndarray:
        ij = np.clip(((p[:, :2] - low) / cell).astype(np.int64), 0, shape - 1)
        return ij[:, 1] * shape[0] + ij[:, 0]

    zbuffer = np.full(shape[0] * shape[1], np.inf)
    np.minimum.at(zbuffer, cells(splats), splats[:, 2])
    height, width = photo_rgb.shape[:2]

    def photo_weight(p: np.ndarray, n: np.ndarray) -> np.ndarray:
        towards = -n[:, 2] / np.maximum(np.linalg.norm(n, axis=1), 1e-12)
        weight = np.clip((towards - FACING_LOW) / (FACING_HIGH - FACING_LOW), 0, 1)
        # Hidden: behind the nearest surface in its cell by more than the cell's own slope explains.
        slope = np.minimum(np.linalg.norm(n[:, :2], axis=1) / np.maximum(-n[:, 2], 1e-6), 4.0)
        weight *= p[:, 2] <= zbuffer[cells(p)] + OCCLUSION_MM * scale + 1.5 * cell * slope
        weight *= (p[:, 0] >= 0) & (p[:, 1] >= 0) & (p[:, 0] <= width - 1) & (p[:, 1] <= height - 1)
        if allowed is not None:
            weight *= allowed(p[:, 0], p[:, 1])
        return weight

    def smooth(values: np.ndarray) -> np.ndarray:
        """Texel weights eroded then blurred in UV space, so they fall to 0 before their source ends."""
        image = np.zeros(size * size, np.float32)
        image[texels] = values
        image = image.reshape(size, size)
        kernel = np.ones((2 * BLEND_TEXELS + 1,) * 2, np.uint8)
        image = cv2.GaussianBlur(cv2.erode(image, kernel), (0, 0), BLEND_TEXELS / 2)
        return image.ravel()[texels][:, None]

    own_weight = smooth(photo_weight(points, own_matrix @ normals))
    twin_weight = smooth(photo_weight(twins, twin_matrix @ normals))
    own = _bilinear(photo_rgb, points[:, 0], points[:, 1])
    twin = _bilinear(photo_rgb, twins[:, 0], twins[:, 1])

    label = np.zeros(len(vertices), np.int64)
    label[model.regions["eyes"]] = 1
    label[model.regions["mouth_interior"]] = 2
    texel_label = label[corner_ids[:, 0]]
    skin_texels = (own_weight[:, 0] > 0.9) & np.isin(corner_ids[:, 0], model.regions["face"])
    skin = np.median(own[skin_texels], axis=0) if skin_texels.sum() > 100 else np.array([200.0, 160.0, 140.0])
    fill = np.array([skin, EYE_COLOUR, MOUTH_COLOUR], np.float32)[texel_label]
    colour = own_weight * own + (1 - own_weight) * (twin_weight * twin + (1 - twin_weight) * fill)

    texture = np.zeros((size * size, 3), np.float32)
    texture[texels] = colour
    texture = texture[nearest]  # the gutter takes its nearest covered texel
    return np.clip(texture + 0.5, 0, 255).astype(np.uint8).reshape(size, size, 3)
