"""Real photos with fitted Surrey faces as training samples, and face profiling (3DDFA's idea).

Each labelled photo (training/label_real.py) gives a fitted Surrey shape and pose. A sample is
either the photo itself (its pixels, cropped by the crop rule around the fitted landmarks, with the
usual detector-like jitter) with its fitted mesh as target, or a *profiled* view: the fitted face is
turned further about its own vertical axis (towards ±90° yaw) and re-rendered with the photo's own
pixels. Every point of the turned surface takes the colour that the photo shows at that surface
point in the original pose; points the photo does not see (the far side) take the colour at their
mirror point (Surrey symmetry list). The photo's original face region is filled from its
surroundings (a coarse normalised blur) before the turned face is drawn over it, so no ghost of the
old face remains. With an ICT FaceKit head (`head`, see HeadBehind), faces turned by 15° or more get
a head behind them: ears, neck, and a hair-coloured scalp, turned with the face; otherwise, and where
the head does not reach, the photo's hair, ears and background stay as they were. Where the stored
source crop runs beyond the photo (tight face crops), it is filled from the photo's edge once at
loading, so a turn never shows a black frame.

Targets (depth, mask, landmarks, vertices) come from the same splat and crop rule as the synthetic
source, so voxels, network and loop are untouched. Everything after loading runs in torch on the
source's device (CPU or CUDA).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from facevox.crop import crop_matrix
from training.correspondence import symmetry
from training.fit import project
from training.ict_head import IctHead
from training.render import facing_camera, splat, vertex_normals
from training.sfm import SurreyModel
from training.sources import Batch
from training.sources.ict import KINDS, IctFaces
from training.sources.synthetic import apply_crop, close_mouth, crop_transform, degrade, rotation_matrices

SOURCE_ZOOM = 1.35  # the stored source crop covers this much more than the network crop
FLIP = torch.tensor([1.0, -1.0, -1.0])
HEAD_MIN_TURN = 15.0  # degrees: faces turned less than this keep the photo's own head, ears and hair
HAIR_FALLBACK, HAIR_MIN_POINTS = (0.20, 0.13, 0.08), 50  # dark brown where a photo shows under 50 scalp points
HEAD_SEED = 7_919  # the head behind a profiled face draws from its own generator, seeded seed + this


def push_pull(image: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Fill the unknown pixels (known (b, 1, h, w) = 0) of (b, c, h, w) images smoothly from the known ones
    (a push-pull pyramid: averages of known pixels at coarser scales, interpolated back up)."""
    h, w = image.shape[-2:]
    if min(h, w) <= 2:
        total = (image * known).sum((2, 3), keepdim=True) / known.sum((2, 3), keepdim=True).clamp_min(1e-6)
        return torch.where(known > 0, image, total.expand_as(image))
    sums = F.avg_pool2d(F.pad(image * known, (0, w % 2, 0, h % 2)), 2)
    weights = F.avg_pool2d(F.pad(known, (0, w % 2, 0, h % 2)), 2)
    coarse = push_pull(sums / weights.clamp_min(1e-6), (4 * weights).clamp(max=1.0))
    up = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return image * known + up * (1 - known)


def fill_outside(sources: torch.Tensor, inside: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """(N, 3, S, S) uint8 source crops with the pixels beyond their photo (inside (N, 1, S, S) uint8 < 255:
    black from the warp) filled from the photo's own edge by push-pull, so no turn shows a black frame."""
    out = []
    for start in range(0, len(sources), chunk):
        image, known = sources[start : start + chunk].float(), inside[start : start + chunk].float() / 255
        known = (known > 0.999).float()  # edge pixels blended with the black border count as outside
        filled = push_pull(image, known)
        out.append(filled.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


def texture_weights(own: torch.Tensor, mirror: torch.Tensor):
    """Blend weights of a surface point's own photo colour and its mirror point's, from how squarely the
    photo sees each (0–1): grazing views (< 0.25) count for nothing, the own side is preferred."""
    return (own - 0.25).clamp_min(0) ** 2, 0.5 * (mirror - 0.25).clamp_min(0) ** 2


class RealFaces:
    """Samples from labelled real photos: the photos themselves and profiled views of them."""

    def __init__(self, model: SurreyModel, images: list[np.ndarray], labels: dict, device="cpu", size: int = 192,
                 volume_depth: int = 200, max_yaw: float = 90.0, original_fraction: float = 0.3,
                 source_size: int = 224, sfm_folder: Path | None = None, head: IctHead | str | Path | None = None):
        """images: RGB uint8 photos; labels: arrays as training.label_real.load_labels gives them (same order);
        head: the ICT FaceKit head (or its model.npz / training pack) drawn behind profiled faces, None for none."""
        self.device, self.size, self.volume_depth = torch.device(device), size, volume_depth
        self.max_yaw, self.original_fraction, self.source_size = max_yaw, original_fraction, source_size
        tensor = lambda a, dtype=torch.float32: torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=self.device)
        self.triangles = tensor(model.triangles, torch.long)
        self.landmarks = tensor(model.landmarks, torch.long)
        self.mirror = tensor(symmetry(model, sfm_folder), torch.long)
        # Pivot of the head turn: between the ears (mid-point of the jaw ends), model frame.
        self.pivot = tensor(model.mean[model.landmarks[[0, 16]]].mean(0) * [0.0, 1.0, 1.0])
        sources, inside, shapes, placed, rotations, poses, zooms = [], [], [], [], [], [], []
        for i, image in enumerate(images):
            shape = model.shape(labels["identity"][i].astype(np.float64), labels["expression"][i].astype(np.float64))
            rotation = labels["rotation"][i].astype(np.float64)
            in_photo = project(shape, rotation, float(labels["scale"][i]), labels["translation"][i].astype(np.float64))
            marks = in_photo[model.landmarks, :2]
            matrix = crop_matrix(np.r_[marks.min(0), marks.max(0)], source_size, zoom=SOURCE_ZOOM)
            sources.append(cv2.warpAffine(image, matrix, (source_size, source_size), flags=cv2.INTER_LINEAR,
                                          borderMode=cv2.BORDER_CONSTANT))
            inside.append(cv2.warpAffine(np.full(image.shape[:2], 255, np.uint8), matrix, (source_size, source_size),
                                         flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT))
            zoom = matrix[0, 0]
            zooms.append(zoom * float(labels["scale"][i]))  # source pixels per mm
            placed.append(np.column_stack([in_photo[:, :2] @ matrix[:, :2].T + matrix[:, 2], in_photo[:, 2] * zoom]))
            shapes.append(shape)
            rotations.append(rotation)
            poses.append(labels["pose"][i])
        self.count = len(sources)
        inside = tensor(np.stack(inside), torch.uint8)[:, None]  # (N, 1, S, S) 255 where the photo reaches
        self.sources = fill_outside(tensor(np.stack(sources), torch.uint8).permute(0, 3, 1, 2), inside)  # (N, 3, S, S)
        self.shapes = tensor(np.stack(shapes))  # (N, n, 3) model frame, mm
        self.placed = tensor(np.stack(placed))  # (N, n, 3) source-crop pixels, original pose
        self.rotations = tensor(np.stack(rotations))
        self.poses = tensor(np.stack(poses))  # (N, 3) yaw, pitch, roll
        self.zooms = tensor(np.array(zooms))
        self.quality = torch.cat([self._visibility(self.placed[i : i + 64]) for i in range(0, self.count, 64)])
        self.skin = self._skin()
        self.head = None if head is None else HeadBehind(self, model, head, inside)

    @classmethod
    def from_folder(cls, model: SurreyModel, labels_dir, photo_root, split: str = "train", sets=None, **kwargs):
        """All labelled photos of one split: labels_dir/SET.npz, photos in photo_root/SET/."""
        from training.label_real import load_labels

        images, merged = [], {}
        for path in sorted(Path(labels_dir).glob("*.npz")):
            labels = load_labels(path, split)
            name = str(labels["set"])
            if sets and name not in sets:
                continue
            for file in labels["photo"]:
                image = cv2.imread(str(Path(photo_root) / name / file), cv2.IMREAD_COLOR)
                images.append(image[:, :, ::-1].copy())
            for key in ("identity", "expression", "rotation", "scale", "translation", "pose"):
                merged.setdefault(key, []).append(labels[key])
        if not images:
            raise FileNotFoundError(f"no labelled {split} photos in {labels_dir} (photos under {photo_root})")
        return cls(model, images, {k: np.concatenate(v) for k, v in merged.items()}, **kwargs)

    def _visibility(self, placed: torch.Tensor) -> torch.Tensor:
        """(b, n) how well the photo sees each vertex: 0 when hidden, else how squarely it faces the camera."""
        s = self.source_size
        _, zbuffer, _ = splat(placed, self.triangles, torch.zeros_like(placed[..., :1]), s)
        col = placed[..., 0].round().long().clamp(0, s - 1)
        row = placed[..., 1].round().long().clamp(0, s - 1)
        front = torch.gather(zbuffer.flatten(1), 1, row * s + col)
        inside = (placed[..., 0] >= 0) & (placed[..., 0] <= s - 1) & (placed[..., 1] >= 0) & (placed[..., 1] <= s - 1)
        tolerance = 0.015 * (placed[..., 0].amax(1) - placed[..., 0].amin(1))[:, None]
        visible = inside & (placed[..., 2] <= front + tolerance)
        facing = (-vertex_normals(placed, self.triangles)[..., 2]).clamp(0, 1)
        return visible.float() * facing

    def _sample_source(self, index: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
        """Colours (b, 3, ...) of source crops `index` at source pixel coordinates xy (b, ..., 2)."""
        s = self.source_size
        grid = (xy + 0.5) / s * 2 - 1
        flat = grid.reshape(grid.shape[0], -1, 1, 2)
        colours = F.grid_sample(self.sources[index].float() / 255, flat, mode="bilinear", padding_mode="border",
                                align_corners=False)
        return colours.reshape(grid.shape[0], 3, *grid.shape[1:-1])

    def textures(self) -> torch.Tensor:
        """(N, n, 3) per-vertex colours in [0, 1]: seen vertices from the photo, the rest from their mirror."""
        out = []
        for start in range(0, self.count, 64):
            index = torch.arange(start, min(start + 64, self.count), device=self.device)
            own = self._sample_source(index, self.placed[index, :, :2]).permute(0, 2, 1)
            q = self.quality[index]
            w_own, w_mir = (w[..., None] for w in texture_weights(q, q[:, self.mirror]))
            skin = self.skin[index][:, None]
            out.append((own * w_own + own[:, self.mirror] * w_mir + skin * 1e-3) / (w_own + w_mir + 1e-3))
        return torch.cat(out)

    def _skin(self) -> torch.Tensor:
        """(N, 3) each photo's mean colour over its squarely seen face vertices (fills what nothing shows)."""
        out = []
        for start in range(0, self.count, 64):
            index = torch.arange(start, min(start + 64, self.count), device=self.device)
            own = self._sample_source(index, self.placed[index, :, :2]).permute(0, 2, 1)
            good = (self.quality[index] > 0.5).float()[..., None]
            out.append((own * good).sum(1) / good.sum(1).clamp_min(1))
        return torch.cat(out)

    def sample(self, batch_size: int, seed: int, yaw: float | None = None, camera_effects: bool = True) -> Batch:
        """A batch; yaw (degrees, optional): turn every face to ±yaw (its side drawn as usual) instead of
        a random yaw, all of them profiled (for previews and checks); camera_effects: degrade the images."""
        g = torch.Generator(device=self.device).manual_seed(seed)
        b, s, dev = batch_size, self.size, self.device
        rand = lambda *shape: torch.rand(*shape, generator=g, device=dev)
        index = torch.randint(self.count, (b,), generator=g, device=dev)

        # Target yaw: keep the photo's own pose, or turn further (mostly away from the camera on the side
        # the face already turns to) up to max_yaw.
        yaw0, pitch, roll = self.poses[index].unbind(-1)
        keep = rand(b) < self.original_fraction
        side = torch.where(yaw0.abs() < 3, torch.where(rand(b) < 0.5, -1.0, 1.0), torch.sign(yaw0))
        side = torch.where(rand(b) < 0.2, -side, side)
        start = torch.where(side == torch.sign(yaw0), yaw0.abs(), torch.zeros_like(yaw0))
        magnitude = start + (self.max_yaw - start).clamp_min(0) * (0.25 + 0.75 * rand(b))
        if yaw is not None:
            keep, magnitude = torch.zeros_like(keep), torch.full_like(magnitude, float(yaw))
        yaw1 = torch.where(keep, yaw0, side * magnitude.clamp(max=self.max_yaw if yaw is None else 90.0))
        delta = yaw1 - yaw0

        # Turn the fitted shape about the pivot; the photo frame keeps its scale (source pixels per mm).
        shapes, placed0 = self.shapes[index], self.placed[index]
        rotation0 = self.rotations[index]
        rotation1 = rotation0 @ rotation_matrices(delta, torch.zeros_like(delta), torch.zeros_like(delta))
        zoom = self.zooms[index]
        centred = shapes - self.pivot
        placed1 = placed0 + zoom[:, None, None] * ((centred @ (rotation1 - rotation0).transpose(1, 2)) * FLIP.to(dev))

        if self.head is not None:  # its own random draws, so the rest of the batch is the same without it
            head_g = torch.Generator(device=dev).manual_seed(seed + HEAD_SEED)
            head_model = self.head.shapes(index)
            head_placed = placed0[:, :1] + zoom[:, None, None] * (
                ((head_model - self.pivot) @ rotation1.transpose(1, 2) - (centred[:, :1] @ rotation0.transpose(1, 2))) * FLIP.to(dev))

        # The crop rule on the turned face's landmarks (with jitter); the original face in the same crop.
        centre, scale = crop_transform(placed1[:, self.landmarks], g, s)
        crop1 = apply_crop(placed1, centre, scale, s, self.volume_depth)
        crop0 = apply_crop(placed0, centre, scale, s, self.volume_depth)

        # Photo pixels of the crop (the background, and the whole image for kept views).
        ys, xs = torch.meshgrid(torch.arange(s, device=dev, dtype=torch.float32), torch.arange(s, device=dev, dtype=torch.float32), indexing="ij")
        pixel = torch.stack([xs, ys], -1)[None]  # (1, s, s, 2) crop pixels
        source_xy = (pixel - (s - 1) / 2) / scale[:, None, None, None] + centre[:, None, None]
        photo = self._sample_source(index, source_xy)  # (b, 3, s, s)

        # Re-render the turned face with the photo's own colours.
        q = self.quality[index]
        attributes = torch.cat([placed0[..., :2], placed0[:, self.mirror, :2], q[..., None], q[:, self.mirror, None]], -1)
        rendered, depth, mask = splat(crop1, self.triangles, attributes, s)
        own = self._sample_source(index, rendered[:, 0:2].permute(0, 2, 3, 1))
        mirrored = self._sample_source(index, rendered[:, 2:4].permute(0, 2, 3, 1))
        w_own, w_mir = texture_weights(rendered[:, 4:5], rendered[:, 5:6])
        skin = self.skin[index][..., None, None]
        face = (own * w_own + mirrored * w_mir + skin * 1e-3) / (w_own + w_mir + 1e-3)
        face, depth, closed = close_mouth(face, depth, mask)

        # Background: the photo with its original face filled in from around it; the head behind the face.
        _, _, mask0 = splat(crop0, self.triangles, torch.zeros_like(crop0[..., :1]), s, subdivisions=4)
        old_face = F.max_pool2d(mask0[:, None].float(), 9, 1, 4) > 0.5
        background = push_pull(photo, (~old_face).float())
        if self.head is not None:
            xy = (head_placed[..., :2] - centre[:, None]) * scale[:, None, None] + (s - 1) / 2
            z = (head_placed[..., 2:] - placed1[..., 2:].mean(1, keepdim=True)) * scale[:, None, None] + self.volume_depth / 2
            turned = ~keep & (delta.abs() >= HEAD_MIN_TURN)  # small turns keep the photo's own head
            head_image, head_covered = self.head.render(index, torch.cat([xy, z], -1), turned, head_g)
            background = torch.where(head_covered[:, None], head_image, background)
        turned_image = torch.where(closed[:, None], face, background)
        image = torch.where(keep[:, None, None, None], photo, turned_image)
        if camera_effects:
            image = degrade(image, g)

        mask = closed
        pose = torch.stack([yaw1, pitch, roll], -1)
        flip = rand(b) < 0.5  # mirror half of the samples (image, mesh through the symmetry list, pose)
        if flip.any():
            image = torch.where(flip[:, None, None, None], image.flip(-1), image)
            depth = torch.where(flip[:, None, None], depth.flip(-1), depth)
            mask = torch.where(flip[:, None, None], mask.flip(-1), mask)
            mirrored_crop = crop1[:, self.mirror] * torch.tensor([-1.0, 1.0, 1.0], device=dev) + torch.tensor([s - 1.0, 0, 0], device=dev)
            crop1 = torch.where(flip[:, None, None], mirrored_crop, crop1)
            pose = torch.where(flip[:, None], pose * torch.tensor([-1.0, 1.0, -1.0], device=dev), pose)
        return Batch(image=image, depth=depth, mask=mask, landmarks=crop1[:, self.landmarks], pose=pose, vertices=crop1)


class HeadBehind:
    """The ICT FaceKit head behind a profiled face: ears, neck, back and top of the head of each photo.

    The head (training.sources.ict.IctFaces' refined mesh, in the Surrey model's frame) is placed on each
    photo's fitted Surrey shape by the affine map that best takes its vertices at the Surrey vertices
    (training.ict_head.surrey_correspondence) onto that shape; it then turns with the face. Skin is the
    photo's mean face colour, shaded as the photo's face is lit (a per-photo fit of brightness against
    the face's normals, constant + linear); the scalp above a random hairline (IctFaces.hair) takes the
    hair colour the photo shows on the head's scalp in the original pose (median; a dark brown where the
    photo does not reach the scalp). Only skin is drawn,
    triangles facing the camera, the neck cut at a random height; the face is drawn over it, so the head
    never covers the face and the targets stay the face's (as for the ICT source: no ears, neck or scalp).
    """

    def __init__(self, real: "RealFaces", model: SurreyModel, head: IctHead | str | Path, inside: torch.Tensor):
        """inside (N, 1, S, S) uint8: 255 where the source crops hold photo pixels (not filled ones)."""
        self.ict = ict = IctFaces(model, head, device=real.device, size=real.size, volume_depth=real.volume_depth)
        dev, self.skin = real.device, real.skin
        ones = torch.ones(len(ict.neutral), 1, device=dev)
        self.homogeneous = torch.cat([ict.neutral, ones], -1)  # (n, 4)
        # Affine (N, 4, 3) from the head's frame to each photo's fitted shape, least squares over the Surrey vertices.
        self.affine = torch.linalg.pinv(self.homogeneous[ict.surrey_vertices]) @ real.shapes
        skin = ict.kind == KINDS["skin"]
        self.skin_triangles = skin[ict.triangles].all(1)
        self.light, self.hair_colour = [], []
        scalp = skin & ~ict.footprint & (ict.neutral[:, 1] > ict.brow_height + 45)
        for start in range(0, real.count, 64):
            index = torch.arange(start, min(start + 64, real.count), device=dev)
            self.light.append(self._fit_light(real, index))
            self.hair_colour.append(self._hair_colour(real, index, scalp, inside[index]))
        self.light, self.hair_colour = torch.cat(self.light), torch.cat(self.hair_colour)

    def shapes(self, index: torch.Tensor) -> torch.Tensor:
        """(b, n, 3) the head on photos `index`'s fitted shapes, model frame (mm)."""
        return self.homogeneous @ self.affine[index]

    @staticmethod
    def _fit_light(real: "RealFaces", index: torch.Tensor) -> torch.Tensor:
        """(b, 4) brightness ≈ c0 + c · normal over each photo's squarely seen face vertices (placed frame),
        divided by the mean brightness there (so it shades the mean skin colour)."""
        placed = real.placed[index]
        brightness = real._sample_source(index, placed[..., :2]).mean(1)  # (b, n)
        normals = vertex_normals(placed, real.triangles)
        design = torch.cat([torch.ones_like(normals[..., :1]), normals], -1)  # (b, n, 4)
        weight = (real.quality[index] > 0.5).float()[..., None]
        normal_eq = (design * weight).transpose(1, 2) @ design + 1e-3 * torch.eye(4, device=placed.device)
        coefficients = torch.linalg.solve(normal_eq, (design * weight).transpose(1, 2) @ brightness[..., None])[..., 0]
        mean = (brightness[..., None] * weight).sum(1) / weight.sum(1).clamp_min(1)
        return coefficients / mean.clamp_min(1e-3)

    def _hair_colour(self, real: "RealFaces", index: torch.Tensor, scalp: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
        """(b, 3) median photo colour on the head's scalp where it faces the camera in the original pose and
        the photo reaches; HAIR_FALLBACK where fewer than HAIR_MIN_POINTS such points exist."""
        placed = real.placed[index, :1] + real.zooms[index, None, None] * (
            ((self.shapes(index) - real.shapes[index, :1]) @ real.rotations[index].transpose(1, 2)) * FLIP.to(real.device))
        colours = real._sample_source(index, placed[..., :2])  # (b, 3, n)
        grid = ((placed[..., :2] + 0.5) / real.source_size * 2 - 1)[:, :, None]
        in_photo = F.grid_sample(inside.float() / 255, grid, align_corners=False)[:, 0, :, 0] > 0.99
        facing = -vertex_normals(placed, self.ict.triangles)[..., 2] > 0.3
        chosen = facing & scalp & in_photo
        masked = torch.where(chosen[:, None], colours, torch.full_like(colours, float("nan")))
        median = masked.nanmedian(-1).values
        fallback = torch.tensor(HAIR_FALLBACK, device=colours.device).expand_as(median)
        return torch.where((chosen.sum(1) >= HAIR_MIN_POINTS)[:, None], median, fallback)

    def render(self, index: torch.Tensor, crop: torch.Tensor, drawn: torch.Tensor, g: torch.Generator):
        """The head's image (b, 3, s, s) and coverage (b, s, s) from its crop-space vertices (b, n, 3), of
        photos `index`; samples where drawn (b,) is False come out empty."""
        ict, b, dev = self.ict, len(index), crop.device
        if not drawn.any():
            return torch.zeros(b, 3, ict.size, ict.size, device=dev), torch.zeros(b, ict.size, ict.size, dtype=torch.bool, device=dev)
        rand = lambda *shape: torch.rand(*shape, generator=g, device=dev)
        hair_w, strands = ict.hair(b, g)
        albedo = self.skin[index][:, None] * (1 - hair_w) + self.hair_colour[index][:, None] * strands * hair_w
        normals = vertex_normals(crop, ict.triangles)
        light = self.light[index]
        shade = (light[:, None, :1] + (normals * light[:, None, 1:]).sum(-1, keepdim=True)).clamp(0.25, 1.4)
        neck_cut = ict.chin_height - 15 - 90 * rand(b, 1)
        keep = facing_camera(crop, ict.triangles) & self.skin_triangles[None] & (ict.triangle_low[None] > neck_cut) & drawn[:, None]
        image, _, covered = splat(crop, ict.triangles, (albedo * shade).clamp(0, 1), ict.size, ict.subdivisions, keep)
        return image, covered


class Mixture:
    """Several sources in one batch: each contributes round(share · batch) samples (the first takes the rest)."""

    def __init__(self, sources: list, shares: list[float]):
        self.sources, self.shares = sources, shares

    def sample(self, batch_size: int, seed: int) -> Batch:
        counts = [int(round(share * batch_size)) for share in self.shares[1:]]
        counts = [batch_size - sum(counts)] + counts
        parts = [src.sample(n, seed * len(self.sources) + i) for i, (src, n) in enumerate(zip(self.sources, counts)) if n > 0]
        return Batch(*(torch.cat([getattr(p, f) for p in parts]) for f in ("image", "depth", "mask", "landmarks", "pose", "vertices")))
