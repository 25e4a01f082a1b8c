"""Synthetic training faces from the ICT FaceKit head: the whole visible head under a perspective camera.

What a sample draws (all from one seed per batch, on any torch device):
- a head: 100 identity modes ~ N(0, identity_sd²) clipped at ±3 sd, sparse ARKit expressions (a few
  of the 53 at random strengths, often both sides alike; the jaw opens in a third of the faces),
  eyeballs turned to a random gaze (the eyeLook blendshapes move the lids with them);
- what a photo shows of it: face, ears, neck cut where a collar would be, eyeballs, and (through an
  open mouth) teeth, gums, tongue and the mouth's back wall. Triangles facing away from the camera
  are not drawn, so the inside of the cut neck and of the sockets never shows;
- skin: a procedural albedo (tone, blotches, brows, lids, lips, nostrils painted where the Surrey
  source paints them, carried over by the vertex correspondence) or, for a texture_fraction of the
  faces, a real photo's per-Surrey-vertex skin carried over the same way, its median colour on the
  ears, neck and scalp; hair colour on the scalp above a random hairline (or a bald head);
- a pose (yaw up to ±max_yaw, pitch ±35°, roll ±30°) and a perspective camera 0.45–3 m from the
  head's centre (log-uniform); the crop rule then fixes the scale, so the focal length only sets the
  photo's size and the distance alone sets how strong the perspective is;
- light, backgrounds, JPEG and blur as the Surrey source (training.sources.synthetic), with hair
  volume behind the head, clothes below the neck, and on top hair locks, a hand or an object.

Targets: landmarks, vertices and the face region are those of the Surrey model carried over to the
ICT head by `training.ict_head.surrey_correspondence`: the 68 landmarks are the ICT vertices at the
Surrey model's landmark vertices (its chosen convention), `vertices` the ICT vertices at all 3,448
Surrey vertices (so batches mix with the Surrey source's), and mask and depth cover the ICT surface
within the Surrey face's extent (eyes and open mouth included, ears, neck and scalp not), as the
network is asked for the face alone. Depth is metric: the distance Z − Z_face behind the face's mean
depth, scaled like x and y at the face's distance, so a near camera enlarges the nose in the image
but not its depth (the projective 1 − Z_face/Z, exact across projected triangles, would make a point
80 mm in front of a face centre 0.38 m away 27 % deeper); the splat interpolates it linearly across each projected triangle,
< 0.1 px off for these ≤ 6 mm triangles. It is centred like the Surrey source's, on the mean of
the Surrey vertices, and the landmarks' depth is the same quantity.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree

from training.ict_head import (
    DEFAULT_DIR, EYE_SOCKETS, EYEBALLS, GUMS_TONGUE, IRISES, MOUTH_SOCKET, TEETH, IctHead, distance_to_outline,
    in_surrey_frame, load_head, surrey_correspondence,
)
from training.render import facing_camera, splat, vertex_normals
from training.sfm import SurreyModel
from training.sources import Batch
from training.sources.synthetic import (
    SKIN_DARK, SKIN_LIGHT, backgrounds, crop_transform, degrade, feature_weights, light, rotation_matrices,
)

MAX_EDGE_MM = 6.0  # triangles are split until no edge is longer
SAMPLES_PER_MM = 1.25  # splat subdivisions per mm of a triangle's longest side (≈ 0.65 px apart at the crop
# rule's 0.81 px/mm on the mean face); gaps inside the face appeared at 0.8 and below in 32 random samples
KINDS = {"skin": 0, "mouth": 1, "eye_socket": 2, "gums": 3, "teeth": 4, "sclera": 5, "iris": 6, "pupil": 7}
TEXTURE_MARGIN_MM = 6.0  # real-photo skin fades to its median colour over the Surrey face's outer 6–12 mm
DISTANCE_MM = (450.0, 3000.0)  # camera to the head's centre (the nose ~ 0.1 m nearer): close selfie to portrait
GAZE_DEG = (25.0, 20.0)  # largest eyeball turn: sideways, up and down
IRIS_DEG, PUPIL_DEG = 24.0, 9.0  # the iris and pupil on the eyeball, as angles from its axis


def refine(triangles: np.ndarray, positions: np.ndarray, max_edge: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """Split triangles 1 → 4 at their edge midpoints until no edge is longer than max_edge. Returns the
    triangles and, per round, the (p, 2) parent vertex pairs of the vertices it added (numbered on from
    the last); a midpoint shared by two triangles is made once. Midpoints stay on the edges they split
    under any linear blend of the vertices, so a neighbour left whole leaves no crack."""
    rounds, positions = [], positions.copy()
    midpoints: dict[tuple[int, int], int] = {}
    while True:
        corners = positions[triangles]
        longest = np.linalg.norm(corners - np.roll(corners, 1, axis=1), axis=-1).max(1)
        big = longest > max_edge
        if not big.any():
            return triangles, rounds
        split = triangles[big]
        edges = np.sort(np.stack([split[:, [0, 1]], split[:, [1, 2]], split[:, [2, 0]]], 1).reshape(-1, 2), axis=1)
        new_pairs = []
        for a, b in map(tuple, np.unique(edges, axis=0)):
            if (a, b) not in midpoints:
                midpoints[(a, b)] = len(positions) + len(new_pairs)
                new_pairs.append((a, b))
        pairs = np.array(new_pairs, dtype=np.int64).reshape(-1, 2)
        positions = np.concatenate([positions, (positions[pairs[:, 0]] + positions[pairs[:, 1]]) / 2])
        rounds.append(pairs)
        mid = np.array([midpoints[tuple(e)] for e in edges]).reshape(-1, 3)  # mids of edges 01, 12, 20
        a, b, c, ab, bc, ca = split[:, 0], split[:, 1], split[:, 2], mid[:, 0], mid[:, 1], mid[:, 2]
        children = np.concatenate([np.stack(t, 1) for t in ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))])
        triangles = np.concatenate([triangles[~big], children])


def extend(values: np.ndarray, rounds: list[np.ndarray], axis: int = 0) -> np.ndarray:
    """Per-vertex values along `axis` with the refined mesh's new vertices appended (parents' mean)."""
    values = np.moveaxis(values, axis, 0)
    for pairs in rounds:
        values = np.concatenate([values, (values[pairs[:, 0]] + values[pairs[:, 1]]) / 2])
    return np.moveaxis(values, 0, axis)


def sphere_centre(points: np.ndarray) -> np.ndarray:
    """Least-squares centre of the sphere through points (n, 3)."""
    system = np.c_[2 * points, np.ones(len(points))]
    solution, *_ = np.linalg.lstsq(system, (points**2).sum(1), rcond=None)
    return solution[:3]


class IctFaces:
    """Renders random ICT FaceKit heads into training crops on any torch device (see the module docstring)."""

    def __init__(self, surrey: SurreyModel, head: IctHead | str | Path = DEFAULT_DIR, photos: np.ndarray | None = None,
                 device="cpu", size: int = 192, volume_depth: int = 200, max_yaw: float = 90.0,
                 textures: np.ndarray | torch.Tensor | None = None, texture_fraction: float = 0.3,
                 identity_sd: float = 1.0):
        """surrey: the Surrey model with the landmark convention to follow; head: the ICT head or the path
        of its model.npz / training pack (training.ict_head); photos, textures, texture_fraction: as
        training.sources.synthetic.SyntheticFaces."""
        head = in_surrey_frame(head if isinstance(head, IctHead) else load_head(head), surrey)
        self.device, self.size, self.volume_depth, self.max_yaw = torch.device(device), size, volume_depth, max_yaw
        self.identity_sd, self.texture_fraction = identity_sd, texture_fraction
        self.expression_names = head.expression_names
        tensor = lambda a, dtype=torch.float32: torch.as_tensor(a if torch.is_tensor(a) else np.ascontiguousarray(a), dtype=dtype, device=self.device)

        match = surrey_correspondence(head, surrey)
        inner_irises = np.r_[tuple(np.arange(*span) for span in IRISES.values())]  # hidden inside the sclera
        drawn = head.triangles[~np.isin(head.triangles, inner_irises).any(1)]
        triangles, rounds = refine(drawn, head.neutral.astype(np.float64), MAX_EDGE_MM)
        neutral = extend(head.neutral.astype(np.float64), rounds)
        n = len(neutral)
        self.neutral = tensor(neutral)
        self.identity_basis = tensor(extend(head.identity, rounds, axis=1).reshape(len(head.identity), -1))  # (k, n·3)
        self.expression_basis = tensor(extend(head.expression, rounds, axis=1).reshape(len(head.expression), -1))
        self.triangles = tensor(triangles, torch.long)
        longest = np.linalg.norm(neutral[triangles] - neutral[np.roll(triangles, 1, axis=1)], axis=-1).max(1)
        self.subdivisions = tensor(np.clip(np.ceil(longest * SAMPLES_PER_MM), 2, None), torch.long)
        self.landmarks = tensor(match.surrey_to_ict[surrey.landmarks], torch.long)
        self.surrey_vertices = tensor(match.surrey_to_ict, torch.long)

        kind = np.zeros(len(head.neutral), np.int64)
        for name, span in (("mouth", MOUTH_SOCKET), ("eye_socket", EYE_SOCKETS), ("gums", GUMS_TONGUE), ("teeth", TEETH)):
            kind[span[0]:span[1]] = KINDS[name]
        eyes = {}
        for side, (start, stop) in EYEBALLS.items():  # the sclera mesh, its cornea painted as iris and pupil
            sclera = np.arange(start, IRISES[side][0])
            kind[start:stop] = KINDS["sclera"]
            centre = sphere_centre(head.neutral[sclera].astype(np.float64))
            radius = np.linalg.norm(head.neutral[sclera] - centre, axis=1)
            axis = (head.neutral[sclera][radius > radius.max() - 0.5] - centre).mean(0)  # the cornea's bulge
            angle = np.degrees(np.arccos((head.neutral[sclera] - centre) @ axis / np.linalg.norm(axis) / radius))
            kind[sclera[angle < IRIS_DEG]] = KINDS["iris"]
            kind[sclera[angle < PUPIL_DEG]] = KINDS["pupil"]
            eyes[side] = (np.arange(start, stop), centre)
        kind = np.r_[kind, np.zeros(n - len(kind), np.int64)]
        offset = len(head.neutral)
        for pairs in rounds:  # midpoints take their first parent's kind
            kind[offset:offset + len(pairs)] = kind[pairs[:, 0]]
            offset += len(pairs)
        self.kind = tensor(kind, torch.long)
        self.eyes = [(tensor(ids, torch.long), tensor(centre), tensor(head.neutral[ids].mean(0))) for ids, centre in eyes.values()]

        # Skin maps from the Surrey model: painted features and real-photo textures (nearest Surrey vertex
        # of the ICT head placed on the mean face), and how far each vertex lies from the Surrey face.
        placed = extend(match.placed, rounds)
        distance, nearest = cKDTree(surrey.mean).query(placed)
        skin = kind == KINDS["skin"]
        self.ict_to_surrey = tensor(nearest, torch.long)
        inland = np.clip((distance_to_outline(surrey)[nearest] - TEXTURE_MARGIN_MM) / TEXTURE_MARGIN_MM, 0, 1)  # photos show hair or background there
        self.on_surrey = tensor(np.exp(-((np.maximum(distance - 3.0, 0) / 6.0) ** 2)) * skin * inland)[None, :, None]
        features = feature_weights(surrey)[nearest] * (distance < 6.0)[:, None] * skin[:, None]
        features[:, 2] = 0  # Surrey's painted irises: this head has eyeballs
        self.features = tensor(features)
        self.footprint = tensor(extend(match.footprint.astype(np.float64), rounds) > 0.5, torch.bool)
        rng = np.random.default_rng(0)
        freq, phase = rng.normal(0, 1 / 40, (16, 3)), rng.uniform(0, 2 * np.pi, 16)
        self.smooth_basis = tensor(np.sin(placed @ freq.T + phase))
        hair_freq, hair_phase = rng.normal(0, 1 / 4, (16, 3)) * [1, 0.1, 1], rng.uniform(0, 2 * np.pi, 16)
        self.hair_basis = tensor(np.sin(neutral @ hair_freq.T + hair_phase))

        # Landmarks on the neutral head for the hairline and the neck cut (model frame, mm).
        marks = neutral[match.surrey_to_ict[surrey.landmarks]]
        self.brow_height, self.chin_height = float(marks[17:27, 1].mean()), float(marks[8, 1])
        self.front = float(marks[17:27, 2].mean())
        self.triangle_low = tensor(neutral[triangles, 1].min(1))
        self.pivot = tensor([0.0, float(marks[[0, 16], 1].mean()), float(marks[[0, 16], 2].mean()) - 20.0])
        self.eye_look = {name: self.expression_names.index(name) for name in self.expression_names if name.startswith("eyeLook")}
        names = self.expression_names
        self.twins = tensor([names.index(n[:-1] + "R") if n.endswith("_L") else i for i, n in enumerate(names)], torch.long)
        self.jaw_open, self.mouth_close = names.index("jawOpen"), names.index("mouthClose")

        photos = photos if photos is not None else np.zeros((0, 1, 1, 3), np.uint8)
        self.photos = tensor(photos, torch.uint8).permute(0, 3, 1, 2)
        self.textures = None if textures is None or len(textures) == 0 else tensor(textures)

    def sample(self, batch_size: int, seed: int) -> Batch:
        g = torch.Generator(device=self.device).manual_seed(seed)
        b, dev = batch_size, self.device
        rand = lambda *shape: torch.rand(*shape, generator=g, device=dev)
        identity = (torch.randn(b, self.identity_basis.shape[0], generator=g, device=dev) * self.identity_sd)
        identity = identity.clamp(-3 * self.identity_sd, 3 * self.identity_sd)
        e = self.expression_basis.shape[0]
        expression = rand(b, e) * (rand(b, e) < 0.08)
        expression = torch.where(rand(b, e) < 0.6, expression[:, self.twins], expression)  # both sides alike
        expression[:, self.jaw_open] = rand(b) ** 1.5 * (rand(b) < 0.33)
        expression[:, self.mouth_close] = expression[:, self.mouth_close].minimum(expression[:, self.jaw_open])  # ARKit: closes an open jaw's lips
        gaze = (rand(b, 2) * 2 - 1) * torch.tensor(GAZE_DEG, device=dev)
        yaw = (rand(b) * 2 - 1) * self.max_yaw
        pitch = (rand(b) * 2 - 1) * 35
        roll = (rand(b) * 2 - 1) * 30
        distance = torch.exp(math.log(DISTANCE_MM[0]) + rand(b) * math.log(DISTANCE_MM[1] / DISTANCE_MM[0]))
        return self.render(identity, expression, gaze, yaw, pitch, roll, distance, g)

    def shapes(self, identity: torch.Tensor, expression: torch.Tensor, gaze: torch.Tensor) -> torch.Tensor:
        """Model-frame vertices (b, n, 3) in mm: identity (b, k) coefficients (N(0, 1) prior), expression (b, 53) weights
        (their eyeLook weights are replaced by the gaze's), gaze (b, 2) eyeball yaw and pitch in degrees
        (to the subject's left, up)."""
        b = identity.shape[0]
        look = {"Out_L": gaze[:, 0] / GAZE_DEG[0], "In_L": -gaze[:, 0] / GAZE_DEG[0],
                "In_R": gaze[:, 0] / GAZE_DEG[0], "Out_R": -gaze[:, 0] / GAZE_DEG[0],
                "Up_L": gaze[:, 1] / GAZE_DEG[1], "Up_R": gaze[:, 1] / GAZE_DEG[1],
                "Down_L": -gaze[:, 1] / GAZE_DEG[1], "Down_R": -gaze[:, 1] / GAZE_DEG[1]}
        expression = expression.clone()
        for name, index in self.eye_look.items():
            expression[:, index] = look[name.removeprefix("eyeLook")].clamp(0, 1)
        vertices = self.neutral + (identity @ self.identity_basis + expression @ self.expression_basis).reshape(b, -1, 3)
        turn = rotation_matrices(gaze[:, 0], gaze[:, 1], torch.zeros_like(gaze[:, 0]))
        for ids, centre, mean in self.eyes:
            eye = vertices[:, ids]
            moved_centre = centre + eye.mean(1, keepdim=True) - mean
            vertices[:, ids] = (eye - moved_centre) @ turn.transpose(1, 2) + moved_centre
        return vertices

    def render(self, identity, expression, gaze, yaw, pitch, roll, distance, g: torch.Generator,
               camera_effects: bool = True, jitter: bool = True) -> Batch:
        """One batch from explicit shape and camera parameters (sample() draws them); distance (b,) mm
        from the camera to the head's centre. Skin, light, clutter and crop jitter come from g."""
        b, s, dev = identity.shape[0], self.size, self.device
        rand = lambda *shape: torch.rand(*shape, generator=g, device=dev)
        vertices = self.shapes(identity, expression, gaze)
        camera = (vertices - self.pivot) @ rotation_matrices(yaw, pitch, roll).transpose(1, 2)
        camera = camera * torch.tensor([1.0, -1.0, -1.0], device=dev)  # x right, y down, z away
        z = camera[..., 2:] + distance[:, None, None]
        z_face = z[:, self.surrey_vertices].mean(1, keepdim=True)
        projected = torch.cat([camera[..., :2] / z, z / z_face - 1], -1)  # x, y and depth alike at the face's distance
        centre, scale = crop_transform(projected[:, self.landmarks], g, s, jitter)
        xy = (projected[..., :2] - centre[:, None]) * scale[:, None, None] + (s - 1) / 2
        k = (projected[..., 2] - projected[:, self.surrey_vertices, 2].mean(1, keepdim=True)) * scale[:, None]
        crop = torch.cat([xy, k[..., None] + self.volume_depth / 2], -1)

        albedo, hair_colour = self._albedo(vertices, b, g)
        colours = light(albedo, vertex_normals(crop, self.triangles), g)
        inside = (self.kind >= KINDS["mouth"]) & (self.kind <= KINDS["gums"])
        colours = colours * torch.where(inside, 0.45, 1.0)[None, :, None]  # the mouth and sockets get little light
        neck_cut = self.chin_height - 15 - 90 * rand(b, 1)
        keep = facing_camera(crop, self.triangles) & (self.triangle_low[None] > neck_cut)
        attributes = torch.cat([colours, self.footprint.float()[None, :, None].expand(b, -1, 1)], -1)
        rendered, zbuffer, covered = splat(crop, self.triangles, attributes, s, self.subdivisions, keep)
        face = (rendered[:, 3:4] > 0.5).float()
        closed = -F.max_pool2d(-F.max_pool2d(face, 3, 1, 1), 3, 1, 1)  # no pixel-sized notches at the edge
        mask = covered & (closed[:, 0] > 0.5)
        depth = torch.where(mask, zbuffer, torch.full_like(zbuffer, float("inf")))
        image = self._compose(rendered[:, :3], covered, crop[:, self.landmarks], hair_colour, g)
        if camera_effects:
            image = degrade(image, g)
        return Batch(image=image, depth=depth, mask=mask, landmarks=crop[:, self.landmarks],
                     pose=torch.stack([yaw, pitch, roll], -1), vertices=crop[:, self.surrey_vertices])

    def _albedo(self, vertices, b, g):
        """Per-vertex albedo (b, n, 3) and the hair colour (b, 3)."""
        dev = self.device
        rand = lambda *shape: torch.rand(*shape, generator=g, device=dev)
        tone = rand(b, 1) ** 1.3
        light_skin, dark_skin = (torch.as_tensor(c, device=dev, dtype=torch.float32) for c in (SKIN_LIGHT, SKIN_DARK))
        skin = (light_skin * (1 - tone) + dark_skin * tone) * (1 + (rand(b, 3) - 0.5) * 0.15)
        blotch = self.smooth_basis @ (torch.randn(b, 16, 1, generator=g, device=dev) * 0.03)
        albedo = skin[:, None] * (1 + blotch)
        if self.textures is not None:  # real skin on the face, its median colour beyond
            use = rand(b, 1, 1) < self.texture_fraction
            texture = self.textures[torch.randint(len(self.textures), (b,), generator=g, device=dev)]
            texture = texture * (0.85 + 0.3 * rand(b, 1, 1))
            median = texture.median(1, keepdim=True).values
            carried = texture[:, self.ict_to_surrey] * self.on_surrey + median * (1 + blotch) * (1 - self.on_surrey)
            albedo = torch.where(use, carried, albedo)
        else:
            use = torch.zeros(b, 1, 1, dtype=torch.bool, device=dev)
        w = self.features[None]
        painted = albedo * (1 - (rand(b, 1, 1) * 0.7 + 0.2) * w[..., 0:1]) * (1 - 0.6 * w[..., 1:2])
        lips = skin[:, None] * torch.tensor([0.95, 0.55, 0.55], device=dev) * (0.7 + 0.4 * rand(b, 1, 1))
        lip_w = w[..., 3:4] * (0.5 + 0.5 * rand(b, 1, 1))
        painted = (painted * (1 - lip_w) + lips * lip_w) * (1 - 0.7 * w[..., 4:5]) * (1 - 0.5 * w[..., 5:6])
        albedo = torch.where(use, albedo, painted)

        # Hair on the scalp above a hairline that falls from the forehead to the nape; 15 % bald.
        hair_tone = rand(b, 1)
        hair_colour = torch.where(rand(b, 1) < 0.75, torch.tensor([0.12, 0.08, 0.05], device=dev) * (0.4 + 2 * hair_tone),
                                  rand(b, 3) * 0.8 + 0.1)
        hair_w, strands = self.hair(b, g)
        albedo = albedo * (1 - hair_w) + hair_colour[:, None] * strands * hair_w

        # Inside the mouth and the eyes.
        kind = self.kind
        sclera = torch.tensor([0.85, 0.82, 0.78], device=dev) * (0.8 + 0.2 * rand(b, 1, 1))
        palette = torch.tensor([[0.30, 0.17, 0.08], [0.30, 0.17, 0.08], [0.40, 0.30, 0.15], [0.30, 0.42, 0.55],
                                [0.30, 0.38, 0.25], [0.38, 0.40, 0.42]], device=dev)  # brown (twice), hazel, blue, green, grey
        iris = palette[torch.randint(len(palette), (b,), generator=g, device=dev)][:, None] * (0.4 + 0.7 * rand(b, 1, 1))
        colour_of = {
            "mouth": torch.tensor([0.35, 0.10, 0.10], device=dev).expand(b, 1, 3),
            "eye_socket": skin[:, None] * 0.4,
            "gums": torch.tensor([0.65, 0.30, 0.30], device=dev) * (0.8 + 0.3 * rand(b, 1, 1)),
            "teeth": torch.tensor([0.92, 0.88, 0.80], device=dev) * (0.75 + 0.25 * rand(b, 1, 1)),
            "sclera": sclera, "iris": iris, "pupil": torch.full((b, 1, 3), 0.03, device=dev),
        }
        for name, colour in colour_of.items():
            albedo = torch.where((kind == KINDS[name])[None, :, None], colour, albedo)
        return albedo, hair_colour

    def hair(self, b: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Where the scalp has hair (b, n, 1) in [0, 1], above a random hairline that falls from the forehead
        to the nape (15 % bald), and the strands' brightness (b, n, 1) to multiply the hair colour by."""
        dev = self.device
        rand = lambda *shape: torch.rand(*shape, generator=g, device=dev)
        model = self.neutral[None]
        hairline = self.brow_height + 30 + 40 * rand(b, 1) - (0.55 + 0.25 * rand(b, 1)) * (self.front - model[..., 2]).clamp_min(0)
        hair_w = torch.sigmoid((model[..., 1] - hairline) / 3) * (~self.footprint) * (self.kind == KINDS["skin"])
        hair_w = (hair_w * (rand(b, 1) > 0.15))[..., None]
        strands = 0.75 + 0.5 * torch.sigmoid(self.hair_basis @ torch.randn(b, 16, 1, generator=g, device=dev))
        return hair_w, strands

    def _compose(self, head, covered, marks, hair_colour, g) -> torch.Tensor:
        """The rendered head over hair volume, clothes and background; hair locks, a hand or an object on top."""
        b, s, dev = head.shape[0], self.size, self.device
        rand = lambda *shape: torch.rand(*shape, generator=g, device=dev)
        ys, xs = torch.meshgrid(torch.arange(s, device=dev, dtype=torch.float32), torch.arange(s, device=dev, dtype=torch.float32), indexing="ij")
        image = backgrounds(self.photos, b, s, g)
        low, high = marks[..., :2].amin(1), marks[..., :2].amax(1)
        width, height = (high - low).unbind(-1)
        cx, top = (low[:, 0] + high[:, 0]) / 2, torch.where(covered, ys, torch.full_like(ys, float(s))).flatten(1).amin(1)
        bottom = torch.where(covered, ys, torch.full_like(ys, -1.0)).flatten(1).amax(1)
        streaks = F.interpolate(rand(b, 1, 8, 64), size=(s, s), mode="bilinear")
        hair_image = (hair_colour[..., None, None] * (0.6 + 0.6 * streaks)).clamp(0, 1)
        face_colour = (head * covered[:, None]).sum((2, 3)) / covered.sum((1, 2)).clamp_min(1)[:, None]
        grid = lambda t: t[:, None, None]

        # Hair volume behind the head, clothes from where the neck ends.
        radius_x, radius_y = (0.6 + 0.3 * rand(b)) * torch.maximum(width, height), (0.5 + 0.4 * rand(b)) * height
        hair_cx, hair_cy = cx + (rand(b) - 0.5) * 0.3 * width, top + 0.4 * radius_y
        volume = ((xs - grid(hair_cx)) / grid(radius_x)) ** 2 + ((ys - grid(hair_cy)) / grid(radius_y)) ** 2 < 1
        long_hair = ((xs - grid(hair_cx)).abs() < grid(radius_x) * 0.9) & (ys > grid(hair_cy)) & (ys < grid(marks[:, 8, 1] + height * rand(b)))
        volume = (volume | long_hair & grid(rand(b) < 0.3)) & grid(rand(b) < 0.5)
        image = torch.where(volume[:, None], hair_image, image)
        shoulders = ys > grid(bottom - 3) + (xs - grid(cx)).abs() * grid(0.2 + 0.4 * rand(b))
        clothes = shoulders & grid(rand(b) < 0.8)
        cloth = rand(b, 3, 1, 1) * (0.7 + 0.3 * F.interpolate(rand(b, 1, 12, 12), size=(s, s), mode="bilinear"))
        image = torch.where(clothes[:, None], cloth, image)
        image = torch.where(covered[:, None], head, image)

        # Hair locks falling over the face: wavy strands narrowing to their ends.
        locks = torch.zeros_like(covered)
        for _ in range(4):
            end = grid(top + (0.2 + 0.7 * rand(b)) * height)
            along = ((ys - grid(top)) / (end - grid(top)).clamp_min(1)).clamp(0, 1)
            x0 = grid(cx + (rand(b) - 0.5) * 1.2 * width + (rand(b) - 0.5) * 0.5 * width) + along * grid((rand(b) - 0.5) * 0.5 * width)
            wave = grid(rand(b) * 0.08 * width) * torch.sin(ys / grid(0.12 * height + 1) + grid(rand(b) * 6.3))
            lock = ((xs - x0 - wave).abs() < grid((0.02 + 0.05 * rand(b)) * width) * (1 - along)) & (ys > grid(top - 5)) & (ys < end)
            locks = locks | lock & grid(rand(b) < 0.12)
        image = torch.where(locks[:, None], hair_image, image)

        # A hand: palm, four fingers and a thumb, skin-coloured, lit from one side.
        anchor = marks[torch.arange(b, device=dev), torch.randint(0, 68, (b,), generator=g, device=dev)][:, :2]
        angle = rand(b) * 2 * math.pi
        along, across = torch.stack([torch.cos(angle), torch.sin(angle)], -1), torch.stack([-torch.sin(angle), torch.cos(angle)], -1)
        size = (0.8 + 0.4 * rand(b)) * width
        palm_centre = anchor - along * (0.35 * size)[:, None]
        u = (xs - grid(palm_centre[:, 0])) * grid(along[:, 0]) + (ys - grid(palm_centre[:, 1])) * grid(along[:, 1])
        v = (xs - grid(palm_centre[:, 0])) * grid(across[:, 0]) + (ys - grid(palm_centre[:, 1])) * grid(across[:, 1])
        hand = (u / grid(0.2 * size)) ** 2 + (v / grid(0.17 * size)) ** 2 < 1
        side = torch.where(rand(b) < 0.5, -1.0, 1.0)
        fingers = ((-0.12, 0.0, 0.27), (-0.04, 0.0, 0.32), (0.04, 0.0, 0.30), (0.12, 0.0, 0.24), (0.15, -0.1, 0.22))
        for offset, start, length in fingers:  # (across, along from the palm's edge, length) in hand sizes; the last is the thumb
            thumb = start < 0
            turn = grid(side * (1.0 if thumb else 0.1) * (rand(b) - 0.3 * thumb))
            du, dv = torch.cos(turn), torch.sin(turn)
            pu, pv = u - grid((0.17 + start) * size), v - grid(side * offset * size)
            t = (pu * du + pv * dv).clamp(min=0) .minimum(grid(length * (0.85 + 0.3 * rand(b)) * size))
            hand = hand | ((pu - t * du) ** 2 + (pv - t * dv) ** 2 < grid(0.045 * size) ** 2)
        hand = hand & grid(rand(b) < 0.15)
        shade = (0.95 + 0.5 * v / grid(size) * grid(side)).clamp(0.5, 1.2)
        skin = face_colour[..., None, None] * (0.85 + 0.3 * rand(b, 1, 1, 1)) * shade[:, None]
        image = torch.where(hand[:, None], skin.clamp(0, 1), image)

        # Something else in front: an ellipse of one colour.
        ox, oy = rand(b, 1, 1) * s, rand(b, 1, 1) * s
        orx, ory = (0.1 + 0.25 * rand(b, 1, 1)) * s, (0.05 + 0.15 * rand(b, 1, 1)) * s
        thing = (((xs - ox) / orx) ** 2 + ((ys - oy) / ory) ** 2 < 1) & (rand(b, 1, 1) < 0.1)
        return torch.where(thing[:, None], rand(b, 3, 1, 1), image)
