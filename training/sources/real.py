"""Real photos with fitted Surrey faces as training samples, and face profiling (3DDFA's idea).

Each labelled photo (training/label_real.py) gives a fitted Surrey shape and pose. A sample is
either the photo itself (its pixels, cropped by the crop rule around the fitted landmarks, with the
usual detector-like jitter) with its fitted mesh as target, or a *profiled* view: the fitted face is
turned further about its own vertical axis (towards ±90° yaw) and re-rendered with the photo's own
pixels. Every point of the turned surface takes the colour that the photo shows at that surface
point in the original pose; points the photo does not see (the far side) take the colour at their
mirror point (Surrey symmetry list). The photo's original face region is filled from its
surroundings (a coarse normalised blur) before the turned face is drawn over it, so no ghost of the
old face remains. Hair, ears and background stay as they were.

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
from training.render import splat, vertex_normals
from training.sfm import SurreyModel
from training.sources import Batch
from training.sources.synthetic import apply_crop, close_mouth, crop_transform, degrade, rotation_matrices

SOURCE_ZOOM = 1.35  # the stored source crop covers this much more than the network crop
FLIP = torch.tensor([1.0, -1.0, -1.0])


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
                 source_size: int = 224, sfm_folder: Path | None = None):
        """images: RGB uint8 photos; labels: arrays as training.label_real.load_labels gives them (same order)."""
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
        self.sources = fill_outside(tensor(np.stack(sources), torch.uint8).permute(0, 3, 1, 2),
                                    tensor(np.stack(inside), torch.uint8)[:, None])  # (N, 3, S, S)
        self.shapes = tensor(np.stack(shapes))  # (N, n, 3) model frame, mm
        self.placed = tensor(np.stack(placed))  # (N, n, 3) source-crop pixels, original pose
        self.rotations = tensor(np.stack(rotations))
        self.poses = tensor(np.stack(poses))  # (N, 3) yaw, pitch, roll
        self.zooms = tensor(np.array(zooms))
        self.quality = torch.cat([self._visibility(self.placed[i : i + 64]) for i in range(0, self.count, 64)])
        self.skin = self._skin()

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

    def sample(self, batch_size: int, seed: int, yaw: float | None = None) -> Batch:
        """A batch; yaw (degrees, optional): turn every face to ±yaw (its side drawn as usual) instead of
        a random yaw, all of them profiled (for previews and checks)."""
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

        # Background: the photo with its original face filled in from around it.
        _, _, mask0 = splat(crop0, self.triangles, torch.zeros_like(crop0[..., :1]), s, subdivisions=4)
        old_face = F.max_pool2d(mask0[:, None].float(), 9, 1, 4) > 0.5
        background = push_pull(photo, (~old_face).float())
        turned_image = torch.where(mask[:, None], face, background)
        image = torch.where(keep[:, None, None, None], photo, turned_image)
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


class Mixture:
    """Several sources in one batch: each contributes round(share · batch) samples (the first takes the rest)."""

    def __init__(self, sources: list, shares: list[float]):
        self.sources, self.shares = sources, shares

    def sample(self, batch_size: int, seed: int) -> Batch:
        counts = [int(round(share * batch_size)) for share in self.shares[1:]]
        counts = [batch_size - sum(counts)] + counts
        parts = [src.sample(n, seed * len(self.sources) + i) for i, (src, n) in enumerate(zip(self.sources, counts)) if n > 0]
        return Batch(*(torch.cat([getattr(p, f) for p in parts]) for f in ("image", "depth", "mask", "landmarks", "pose", "vertices")))
