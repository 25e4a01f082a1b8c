"""Synthetic training faces: Surrey-model shapes rendered under random pose, skin, light and clutter.

Everything is drawn from one seed per batch, so a (seed, batch size) pair always gives the same
batch; held-out sets use seeds that training never reaches.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from facevox.crop import CROP_SCALE, CROP_SHIFT_Y
from training.jpeg import jpeg_roundtrip
from training.render import splat, vertex_normals
from training.sfm import SurreyModel
from training.sources import Batch

LANDMARK_GROUPS = {
    "brows": [list(range(17, 22)), list(range(22, 27))],
    "upper_lids": [[36, 37, 38, 39], [42, 43, 44, 45]],
    "lips": [list(range(48, 60)) + [48]],
    "mouth_line": [[60, 61, 62, 63, 64], [64, 65, 66, 67, 60]],
}
SKIN_LIGHT, SKIN_DARK = np.array([0.96, 0.80, 0.70]), np.array([0.30, 0.19, 0.13])


def _distance_to_polyline(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    best = np.full(len(points), np.inf)
    for a, b in zip(line[:-1], line[1:]):
        t = np.clip(((points - a) @ (b - a)) / max((b - a) @ (b - a), 1e-9), 0, 1)
        best = np.minimum(best, np.linalg.norm(points - (a + t[:, None] * (b - a)), axis=1))
    return best


def feature_weights(model: SurreyModel) -> np.ndarray:
    """(n, 6) per-vertex weights on the mean face: brows, lash lines, irises, lips, mouth line, nostrils."""
    mean, marks = model.mean, model.mean[model.landmarks]

    def near(groups, width):
        d = np.min([_distance_to_polyline(mean, marks[g]) for g in groups], axis=0)
        return np.exp(-((d / width) ** 2))

    eye_centres = [marks[36:42].mean(0), marks[42:48].mean(0)]
    iris = np.max([np.exp(-((np.linalg.norm(mean - c, axis=1) / 4.0) ** 2)) for c in eye_centres], 0)
    lip_polygon = marks[48:60, :2].astype(np.float32)
    inside = np.array([cv2.pointPolygonTest(lip_polygon, (float(x), float(y)), True) for x, y in mean[:, :2]])
    lips = np.clip(0.5 + inside / 3.0, 0, 1) * (mean[:, 2] > marks[48:60, 2].min() - 8)
    nostrils = np.max([np.exp(-((np.linalg.norm(mean - marks[i], axis=1) / 3.5) ** 2)) for i in (31, 35)], 0)
    return np.stack(
        [near(LANDMARK_GROUPS["brows"], 4.0), near(LANDMARK_GROUPS["upper_lids"], 1.8), iris,
         np.maximum(lips, near(LANDMARK_GROUPS["lips"], 2.0)), near(LANDMARK_GROUPS["mouth_line"], 1.3),
         nostrils],
        axis=1,
    )


def load_photos(files: list[Path], size: int = 128) -> np.ndarray:
    """Photos as a (n, size, size, 3) uint8 stack (for background clutter)."""
    photos = [cv2.resize(cv2.imread(str(f))[:, :, ::-1], (size, size), interpolation=cv2.INTER_AREA) for f in files]
    return np.stack(photos) if photos else np.zeros((0, size, size, 3), np.uint8)


def rotation_matrices(yaw, pitch, roll) -> torch.Tensor:
    """Batched version of facevox.pose.rotation_matrix (degrees in, (b, 3, 3) out)."""
    cy, cp, cr = (torch.cos(torch.deg2rad(a)) for a in (yaw, pitch, roll))
    sy, sp, sr = (torch.sin(torch.deg2rad(a)) for a in (yaw, pitch, roll))
    one, zero = torch.ones_like(cy), torch.zeros_like(cy)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(-1, 3, 3)
    rx = torch.stack([one, zero, zero, zero, cp, sp, zero, -sp, cp], -1).reshape(-1, 3, 3)
    rz = torch.stack([cr, sr, zero, -sr, cr, zero, zero, zero, one], -1).reshape(-1, 3, 3)
    return rz @ rx @ ry


class SyntheticFaces:
    """Renders random Surrey-model faces into training crops on any torch device."""

    def __init__(self, model: SurreyModel, photos: np.ndarray | None = None, device="cpu",
                 size: int = 192, volume_depth: int = 200, max_yaw: float = 90.0,
                 textures: np.ndarray | torch.Tensor | None = None, texture_fraction: float = 0.3):
        """textures: optional (t, n, 3) per-vertex colours in [0, 1] sampled from real photos (see
        training.sources.real.RealFaces.textures); a `texture_fraction` of faces then wear one as albedo."""
        self.device, self.size, self.volume_depth, self.max_yaw = torch.device(device), size, volume_depth, max_yaw
        def as_tensor(a, dtype=torch.float32):
            a = a if isinstance(a, torch.Tensor) else np.ascontiguousarray(a)
            return torch.as_tensor(a, dtype=dtype, device=self.device)
        self.mean = as_tensor(model.mean)
        self.shape_basis = as_tensor(model.shape_basis)
        self.expression_basis = as_tensor(model.expression_basis)
        self.triangles = as_tensor(model.triangles, torch.long)
        self.landmarks = as_tensor(model.landmarks, torch.long)
        self.features = as_tensor(feature_weights(model))
        self.smooth_basis = self._smooth_fields(model.mean)
        photos = photos if photos is not None else np.zeros((0, 1, 1, 3), np.uint8)
        self.photos = as_tensor(photos, torch.uint8).permute(0, 3, 1, 2)
        self.textures = None if textures is None or len(textures) == 0 else as_tensor(textures)
        self.texture_fraction = texture_fraction

    def _smooth_fields(self, mean: np.ndarray) -> torch.Tensor:
        """(n, 16) low-frequency functions over the face, for blotchy skin albedo."""
        rng = np.random.default_rng(0)
        freq = rng.normal(0, 1 / 40, (16, 3))
        phase = rng.uniform(0, 2 * np.pi, 16)
        return torch.as_tensor(np.sin(mean @ freq.T + phase), dtype=torch.float32, device=self.device)

    def sample(self, batch_size: int, seed: int) -> Batch:
        g = torch.Generator(device=self.device).manual_seed(seed)
        b, s, dev = batch_size, self.size, self.device
        rand = lambda *shape: torch.rand(*shape, generator=g, device=dev)
        randn = lambda *shape: torch.randn(*shape, generator=g, device=dev)

        # Shape: identity within ±3 sd, sparse expressions.
        identity = (randn(b, self.shape_basis.shape[-1]) * 1.0).clamp(-3, 3)
        expression = rand(b, self.expression_basis.shape[-1]) * (rand(b, self.expression_basis.shape[-1]) < 0.3)
        vertices = self.mean + torch.einsum("nck,bk->bnc", self.shape_basis, identity)
        vertices = vertices + torch.einsum("nce,be->bnc", self.expression_basis, expression * 1.2)

        yaw = (rand(b) * 2 - 1) * self.max_yaw
        pitch = (rand(b) * 2 - 1) * 35
        roll = (rand(b) * 2 - 1) * 30
        return self.render(vertices, yaw, pitch, roll, g)

    def render(self, vertices, yaw, pitch, roll, g, camera_effects: bool = True, jitter: bool = True) -> Batch:
        """Model-frame shapes (b, n, 3) under a pose (degrees), projected into crops (jitter: of the crop
        box, as detectors give), shaded and composed."""
        turned = vertices @ rotation_matrices(yaw, pitch, roll).transpose(1, 2)
        turned = turned * torch.tensor([1.0, -1.0, -1.0], device=self.device)  # model frame → x right, y down, depth away
        crop_vertices = to_crop(turned, self.landmarks, g, self.size, self.volume_depth, jitter)
        colours = self._shade(vertices, crop_vertices, g)
        image, zbuffer, mask = splat(crop_vertices, self.triangles, colours, self.size)
        image, zbuffer, mask = close_mouth(image, zbuffer, mask)
        image = self._compose(image, mask, crop_vertices[:, self.landmarks], g)
        if camera_effects:
            image = degrade(image, g)
        return Batch(
            image=image, depth=zbuffer, mask=mask, landmarks=crop_vertices[:, self.landmarks],
            pose=torch.stack([yaw, pitch, roll], -1), vertices=crop_vertices,
        )

    def _shade(self, model_vertices, crop_vertices, g) -> torch.Tensor:
        b, dev = crop_vertices.shape[0], self.device
        rand = lambda *shape: torch.rand(*shape, generator=g, device=dev)
        tone = rand(b, 1) ** 1.3
        skin = torch.as_tensor(SKIN_LIGHT, device=dev, dtype=torch.float32) * (1 - tone) + torch.as_tensor(SKIN_DARK, device=dev, dtype=torch.float32) * tone
        skin = skin * (1 + (rand(b, 3) - 0.5) * 0.15)
        blotch = (self.smooth_basis @ (torch.randn(b, 16, 1, generator=g, device=dev) * 0.03))  # (b, n, 1)
        albedo = skin[:, None] * (1 + blotch)
        w = self.features[None]  # (1, n, 6)
        brow = torch.rand(b, 1, 1, generator=g, device=dev) * 0.7 + 0.2
        albedo = albedo * (1 - brow * w[..., 0:1]) * (1 - 0.6 * w[..., 1:2])
        iris_colour = rand(b, 1, 3) * 0.25 + 0.05
        albedo = albedo * (1 - w[..., 2:3]) + iris_colour * w[..., 2:3]
        lip_colour = skin[:, None] * torch.tensor([0.95, 0.55, 0.55], device=dev) * (0.7 + 0.4 * rand(b, 1, 1))
        lip_w = w[..., 3:4] * (0.5 + 0.5 * rand(b, 1, 1))
        albedo = albedo * (1 - lip_w) + lip_colour * lip_w
        albedo = albedo * (1 - 0.7 * w[..., 4:5]) * (1 - 0.5 * w[..., 5:6])
        if self.textures is not None:  # real skin: per-vertex colours from a fitted photo
            use = rand(b, 1, 1) < self.texture_fraction
            pick = torch.randint(len(self.textures), (b,), generator=g, device=dev)
            texture = self.textures[pick] * (0.85 + 0.3 * rand(b, 1, 1))
            albedo = torch.where(use, texture, albedo)

        return light(albedo, vertex_normals(crop_vertices, self.triangles), g)

    def _compose(self, face, mask, marks, g) -> torch.Tensor:
        """Face over hair, neck, clothes and a cluttered background; sometimes an occluder on top."""
        b, s, dev = face.shape[0], self.size, self.device
        rand = lambda *shape: torch.rand(*shape, generator=g, device=dev)
        ys, xs = torch.meshgrid(torch.arange(s, device=dev, dtype=torch.float32), torch.arange(s, device=dev, dtype=torch.float32), indexing="ij")
        image = backgrounds(self.photos, b, s, g)
        low, high = marks[..., :2].amin(1), marks[..., :2].amax(1)
        width, height = (high - low).unbind(-1)
        cx = (low[:, 0] + high[:, 0]) / 2
        face_colour = (face * mask[:, None]).sum((2, 3)) / mask.sum((1, 2)).clamp_min(1)[:, None]

        # Neck and clothes below the chin.
        chin = marks[:, 8]
        neck = ((xs - chin[:, 0, None, None]).abs() < (0.25 + 0.15 * rand(b, 1, 1)) * width[:, None, None]) & (ys > chin[:, 1, None, None] - 0.3 * height[:, None, None])
        neck = neck & (rand(b, 1, 1) < 0.85)
        image = torch.where(neck[:, None], face_colour[..., None, None] * (0.55 + 0.3 * rand(b, 1, 1, 1)), image)
        clothes = (ys > chin[:, 1, None, None] + (0.3 + 0.3 * rand(b, 1, 1)) * height[:, None, None]) & (rand(b, 1, 1) < 0.7)
        image = torch.where(clothes[:, None], rand(b, 3, 1, 1) * (0.7 + 0.3 * F.interpolate(rand(b, 1, 12, 12), size=(s, s), mode="bilinear")), image)

        # Hair: an ellipse around the top of the head, textured with vertical streaks.
        top = torch.where(mask, ys, torch.full_like(ys, float(s))).flatten(1).amin(1)
        hair_cx = cx + (rand(b) - 0.5) * 0.2 * width
        radius_x = (0.65 + 0.25 * rand(b)) * torch.maximum(width, height)
        radius_y = (0.45 + 0.35 * rand(b)) * height
        hair_cy = top + 0.35 * radius_y
        inside = ((xs - hair_cx[:, None, None]) / radius_x[:, None, None]) ** 2 + ((ys - hair_cy[:, None, None]) / radius_y[:, None, None]) ** 2 < 1
        long_hair = ((xs - hair_cx[:, None, None]).abs() < radius_x[:, None, None]) & (ys > hair_cy[:, None, None]) & (ys < chin[:, 1, None, None] + height[:, None, None] * rand(b, 1, 1)) & (rand(b, 1, 1) < 0.35)
        hair = (inside | long_hair) & (rand(b, 1, 1) < 0.8)
        tone = rand(b, 1, 1, 1)
        hair_colour = torch.where(rand(b, 1, 1, 1) < 0.75, torch.tensor([0.12, 0.08, 0.05], device=dev)[None, :, None, None] * (0.4 + 2 * tone), rand(b, 3, 1, 1) * 0.8 + 0.1)
        streaks = F.interpolate(rand(b, 1, 8, 64), size=(s, s), mode="bilinear")
        image = torch.where(hair[:, None], (hair_colour * (0.6 + 0.6 * streaks)).clamp(0, 1), image)

        image = torch.where(mask[:, None], face, image)

        # Fringe over the forehead, or a random occluder (hand, object, sunglasses band).
        fringe = inside & (ys < top[:, None, None] + (0.05 + 0.25 * rand(b, 1, 1)) * height[:, None, None]) & (rand(b, 1, 1) < 0.2)
        image = torch.where(fringe[:, None], (hair_colour * (0.6 + 0.6 * streaks)).clamp(0, 1), image)
        ox, oy = rand(b, 1, 1) * s, rand(b, 1, 1) * s
        orx, ory = (0.1 + 0.25 * rand(b, 1, 1)) * s, (0.05 + 0.15 * rand(b, 1, 1)) * s
        occluder = (((xs - ox) / orx) ** 2 + ((ys - oy) / ory) ** 2 < 1) & (rand(b, 1, 1) < 0.15)
        image = torch.where(occluder[:, None], rand(b, 3, 1, 1), image)
        return image

def backgrounds(photos: torch.Tensor, b: int, s: int, g: torch.Generator) -> torch.Tensor:
    """(b, 3, s, s) backgrounds: smooth colour fields and fine noise, or (60 %) a zoomed part of one of the
    photos (n, 3, h, w) uint8 when there are any."""
    dev = photos.device
    rand = lambda *shape: torch.rand(*shape, generator=g, device=dev)
    smooth = F.interpolate(rand(b, 3, 4, 4), size=(s, s), mode="bicubic", align_corners=False)
    fine = F.interpolate(rand(b, 3, 24, 24), size=(s, s), mode="bilinear", align_corners=False)
    background = (smooth * 0.8 + fine * 0.2).clamp(0, 1)
    if len(photos):
        index = torch.randint(len(photos), (b,), generator=g, device=dev)
        zoom = 0.3 + 0.7 * rand(b)
        theta = torch.zeros(b, 2, 3, device=dev)
        theta[:, 0, 0] = theta[:, 1, 1] = zoom
        theta[:, :, 2] = (rand(b, 2) * 2 - 1) * (1 - zoom[:, None])
        grid = F.affine_grid(theta, (b, 3, s, s), align_corners=False)
        photo = F.grid_sample(photos[index].float() / 255, grid, align_corners=False)
        use_photo = (rand(b, 1, 1, 1) < 0.6).float()
        background = background * (1 - use_photo) + photo * use_photo
    return background


def light(albedo: torch.Tensor, normals: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Per-vertex colours (b, n, 3) in [0, 1]: albedo under a random directional light (diffuse, ambient,
    a tint and a little specular); normals (b, n, 3) in crop space (facing the camera: negative z)."""
    b, dev = albedo.shape[0], albedo.device
    rand = lambda *shape: torch.rand(*shape, generator=g, device=dev)
    direction = torch.nn.functional.normalize(
        torch.cat([(rand(b, 2) * 2 - 1) * 1.2, -(0.3 + rand(b, 1))], -1), dim=-1
    )
    diffuse = (normals * direction[:, None]).sum(-1, keepdim=True).clamp_min(0)
    half = torch.nn.functional.normalize(direction + torch.tensor([0, 0, -1.0], device=dev), dim=-1)
    specular = (normals * half[:, None]).sum(-1, keepdim=True).clamp_min(0) ** 20
    ambient = 0.25 + 0.4 * rand(b, 1, 1)
    light_colour = 1 + (rand(b, 1, 3) - 0.5) * 0.2
    shaded = albedo * (ambient + (1.1 - ambient) * diffuse) * light_colour + 0.15 * rand(b, 1, 1) * specular
    return shaded.clamp(0, 1)


def degrade(image: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Camera and compression effects on (b, 3, s, s) images: colour, blur, resolution, noise, JPEG (on the images' device)."""
    b, s, dev = image.shape[0], image.shape[-1], image.device
    rand = lambda *shape: torch.rand(*shape, generator=g, device=dev)
    image = image.clamp(0, 1) ** (0.7 + 0.6 * rand(b, 1, 1, 1))
    image = (image - 0.5) * (0.7 + 0.6 * rand(b, 1, 1, 1)) + 0.5 + (rand(b, 1, 1, 1) - 0.5) * 0.3
    grey = image.mean(1, keepdim=True)
    saturation = torch.where(rand(b, 1, 1, 1) < 0.1, torch.zeros(b, 1, 1, 1, device=dev), 0.6 + 0.7 * rand(b, 1, 1, 1))
    image = grey + (image - grey) * saturation
    low = F.interpolate(F.interpolate(image, scale_factor=0.4, mode="area"), size=(s, s), mode="bilinear")
    blurred = F.avg_pool2d(F.pad(image, (1, 1, 1, 1), mode="replicate"), 3, 1)
    pick = rand(b, 1, 1, 1)
    image = torch.where(pick < 0.2, low, torch.where(pick < 0.5, blurred, image))
    image = image + randn_like(image, g) * (rand(b, 1, 1, 1) * 0.04)
    image = image.clamp(0, 1)
    quality = rand(b) * 65 + 30
    use_jpeg = rand(b, 1, 1, 1) < 0.5
    image = torch.where(use_jpeg, jpeg_roundtrip(image, quality), (image * 255).round() / 255)
    return image


def to_crop(turned: torch.Tensor, landmarks: torch.Tensor, g: torch.Generator, size: int, volume_depth: int,
            jitter: bool = True) -> torch.Tensor:
    """Turned vertices (b, n, 3) (x right, y down, depth away; any units) → crop pixels (x, y, k) by the
    crop rule applied to the landmarks' box, with detector-like jitter of the box scale and centre;
    depth keeps the x/y scale, centred on volume_depth / 2."""
    centre, scale = crop_transform(turned[:, landmarks], g, size, jitter)
    return apply_crop(turned, centre, scale, size, volume_depth)


def crop_transform(marks: torch.Tensor, g: torch.Generator, size: int, jitter: bool = True):
    """The crop rule on landmarks (b, 68, ≥2) with jitter: (centre (b, 2), scale (b,) crop pixels per unit)."""
    b, dev = marks.shape[0], marks.device
    low, high = marks[..., :2].amin(1), marks[..., :2].amax(1)
    randn = lambda *shape: torch.randn(*shape, generator=g, device=dev) * (1.0 if jitter else 0.0)
    extent = (high - low).amax(-1) * torch.exp(randn(b) * 0.08)
    centre = (low + high) / 2
    centre[:, 1] += CROP_SHIFT_Y * (high - low)[:, 1]
    side = CROP_SCALE * extent
    centre = centre + randn(b, 2) * 0.04 * side[:, None]
    return centre, size / side


def apply_crop(turned: torch.Tensor, centre: torch.Tensor, scale: torch.Tensor, size: int, volume_depth: int) -> torch.Tensor:
    xy = (turned[..., :2] - centre[:, None]) * scale[:, None, None] + (size - 1) / 2
    depth = (turned[..., 2] - turned[..., 2].mean(1, keepdim=True)) * scale[:, None] + volume_depth / 2
    return torch.cat([xy, depth[..., None]], -1)


def close_mouth(image, depth, mask, width: int = 9):
    """Close small holes in the face outline (an open mouth): dark interior, recessed depth."""
    grown = F.max_pool2d(mask[:, None].float(), width, 1, width // 2)
    closed = -F.max_pool2d(-grown, width, 1, width // 2)
    hole = (closed[:, 0] > 0.5) & ~mask
    deepest = F.max_pool2d(torch.where(mask, depth, torch.full_like(depth, -1e6))[:, None], width, 1, width // 2)[:, 0]
    depth = torch.where(hole, deepest, depth)
    interior = torch.tensor([0.25, 0.08, 0.08], device=image.device)[None, :, None, None]
    image = torch.where(hole[:, None], interior * image.amax((2, 3), keepdim=True).clamp_min(0.3), image)
    return image, depth, mask | hole


def randn_like(tensor, g):
    return torch.randn(tensor.shape, generator=g, device=tensor.device)
