"""Which Surrey Face Model vertex each MediaPipe face-mesh point sits on: built once, stored as a table.

    python -m training.correspondence            # writes training/data/mediapipe_to_sfm.json

How: Surrey faces (the mean and random identities, some with mild expressions) are rendered by the
synthetic renderer at yaw within ±30° and pitch within ±10°; MediaPipe's face mesh runs on each
render. Every MediaPipe point that lands well inside the rendered face is lifted to the surface by
the render's depth buffer and snapped to the nearest vertex; across views the picks are put on the
mean face and their median gives the vertex. Points are dropped when they rarely land on the mesh
(forehead top and cheek sides beyond the Surrey mesh), when their picks disagree across views, or
when the chosen vertex reprojects far from where MediaPipe put the point; the 10 iris points are
always dropped (they move with the gaze, the Surrey eye does not).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree

from training import sfm
from training.mediapipe_points import IRIS, NUM_POINTS, FaceMeshPoints
from training.sfm import SurreyModel

TABLE = Path(__file__).resolve().parent / "data" / "mediapipe_to_sfm.json"

# MediaPipe face-mesh points with a well-known iBUG-68 meaning (0-based iBUG index); used in tests.
KNOWN = {33: 36, 133: 39, 362: 42, 263: 45, 61: 48, 291: 54, 0: 51, 17: 57, 13: 62, 14: 66, 4: 30, 152: 8}
# (MediaPipe point 4 is the nose tip proper; point 1, often called the tip, sits ~7 mm lower on the Surrey face.)
# MediaPipe's face oval below eye level, from the right ear (photo left) round the chin to the left ear.
JAW_OVAL = [234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361, 323, 454]


def load_table(path: Path = TABLE) -> tuple[np.ndarray, np.ndarray]:
    """(mediapipe point indices, Surrey vertex indices), both int64 of equal length."""
    table = json.loads(Path(path).read_text())
    return np.array(table["mediapipe"], dtype=np.int64), np.array(table["sfm"], dtype=np.int64)


def symmetry(model: SurreyModel, folder: Path | None = None) -> np.ndarray:
    """Each vertex's mirror vertex (n,). The first 845 vertices are the reference mesh, whose mirrors
    sfm_reference_symmetry.txt lists; the rest (finer levels) take the nearest vertex to their mirror
    image on the mean face."""
    folder = Path(folder or sfm.sfm_dir())
    _, mirror = cKDTree(model.mean).query(model.mean * [-1.0, 1.0, 1.0])
    listed = np.loadtxt(folder / "sfm_reference_symmetry.txt", comments="#", dtype=np.int64) - 1
    mirror[: len(listed)] = listed
    return mirror.astype(np.int64)


VIEW_YAWS = [0.0, -15, 15, -30, 30, -8, 8, -22, 22]


def yaw_of(count: int) -> np.ndarray:
    return np.resize(VIEW_YAWS, count)


def contour_vertices(model: SurreyModel, folder: Path | None = None, width_mm: float = 2.5) -> np.ndarray:
    """Vertices within width_mm of the Surrey jaw contour (sfm_model_contours.json, both sides, through the chin)."""
    folder = Path(folder or sfm.sfm_dir())
    contours = json.loads((folder / "sfm_model_contours.json").read_text())["model_contour"]
    line = model.mean[contours["right_contour"] + [model.landmarks[8]] + contours["left_contour"][::-1]]
    from training.sources.synthetic import _distance_to_polyline

    return np.flatnonzero(_distance_to_polyline(model.mean, line) < width_mm)


def render_views(model: SurreyModel, count: int, seed: int = 0):
    """Renders of Surrey faces near frontal: (images uint8 (v, s, s, 3), crop vertices (v, n, 3), depth, mask)."""
    from training.sources.synthetic import SyntheticFaces

    source = SyntheticFaces(model, device="cpu")
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    identity = torch.as_tensor(rng.normal(0, 1, (count, model.shape_basis.shape[-1])).clip(-2.5, 2.5), dtype=torch.float32)
    identity[0] = 0
    expression = torch.as_tensor(rng.uniform(0, 0.5, (count, model.expression_basis.shape[-1])) * (rng.random((count, 6)) < 0.3), dtype=torch.float32)
    expression[0] = 0
    vertices = source.mean + torch.einsum("nck,bk->bnc", source.shape_basis, identity)
    vertices = vertices + torch.einsum("nce,be->bnc", source.expression_basis, expression)
    yaw = torch.as_tensor(yaw_of(count), dtype=torch.float32)
    pitch = torch.as_tensor(rng.uniform(-10, 10, count), dtype=torch.float32)
    roll = torch.as_tensor(rng.uniform(-5, 5, count), dtype=torch.float32)
    images, verts, depths, masks = [], [], [], []
    for start in range(0, count, 16):
        part = slice(start, start + 16)
        batch = source.render(vertices[part], yaw[part], pitch[part], roll[part], g, camera_effects=False)
        images.append((batch.image.permute(0, 2, 3, 1) * 255).round().byte().numpy())
        verts.append(batch.vertices.numpy())
        depths.append(batch.depth.numpy())
        masks.append(batch.mask.numpy())
    return np.concatenate(images), np.concatenate(verts), np.concatenate(depths), np.concatenate(masks)


def build(model: SurreyModel, views: int = 96, seed: int = 0, min_share: float = 0.6, max_spread_mm: float = 6.0,
          max_error: float = 0.035) -> dict:
    import cv2

    images, verts, depths, masks = render_views(model, views, seed)
    size = images.shape[1]
    mesh_points = FaceMeshPoints()
    inner = -F.max_pool2d(-torch.as_tensor(masks, dtype=torch.float32)[:, None], 3, 1, 1)[:, 0].numpy() > 0.5  # 1 px in
    picks = np.full((views, NUM_POINTS), -1, dtype=np.int64)
    found = np.zeros((views, NUM_POINTS, 2))
    seen = np.zeros(views, bool)
    for v in range(views):
        faces = mesh_points(cv2.resize(images[v], (2 * size, 2 * size), interpolation=cv2.INTER_CUBIC))
        if not faces:
            continue
        seen[v] = True
        points = (faces[0][:, :2] + 0.5) / 2 - 0.5  # render pixels of the 2× image → crop pixels
        found[v] = points
        col, row = np.clip(np.round(points).astype(int), 0, size - 1).T
        ok = inner[v, row, col]
        surface = np.column_stack([points, depths[v, row, col]])
        distance, nearest = cKDTree(verts[v]).query(np.where(ok[:, None], surface, 0.0))
        picks[v] = np.where(ok & (distance < 4.0), nearest, -1)
    mesh_points.close()

    # The face oval below the eyes follows the Surrey jaw contour (the mesh's outline in frontal views,
    # where facevox's iBUG jaw points lie too): those points snap, in 2D, to the nearest vertex near
    # that contour, in the renders within ±10° yaw.
    contour = contour_vertices(model)
    frontal = seen & (np.abs(yaw_of(views)) <= 10)
    for i in JAW_OVAL:
        for v in np.flatnonzero(frontal):
            picks[v, i] = contour[np.argmin(np.linalg.norm(verts[v, contour, :2] - found[v, i], axis=1))]
        picks[~frontal, i] = -1

    mediapipe_ids, sfm_ids, errors, spreads, dropped = [], [], [], [], {}
    marks = verts[:, model.landmarks, :2]
    face_size = np.sqrt(np.prod(marks.max(1) - marks.min(1), axis=1))  # per view, crop pixels
    for i in range(NUM_POINTS):
        if i in IRIS:
            continue
        use = frontal if i in JAW_OVAL else seen
        valid = picks[use, i] >= 0
        if valid.sum() < min_share * use.sum():
            dropped[i] = ("share", round(float(valid.mean()), 2))
            continue
        on_mean = model.mean[picks[use, i][valid]]
        median = np.median(on_mean, axis=0)
        vertex = int(np.argmin(np.linalg.norm(model.mean - median, axis=1)))
        spread = float(np.median(np.linalg.norm(on_mean - model.mean[vertex], axis=1)))
        error = float(np.median(np.linalg.norm(verts[use, vertex, :2] - found[use, i], axis=1) / face_size[use]))
        if spread <= max_spread_mm and error <= max_error:
            mediapipe_ids.append(i)
            sfm_ids.append(vertex)
            errors.append(round(error, 4))
            spreads.append(round(spread, 2))
        else:
            dropped[i] = (round(spread, 2), round(error, 4))
    return {
        "about": "MediaPipe face-mesh point -> Surrey Face Model (sfm_shape_3448) vertex; made by "
                 "`python -m training.correspondence` from MediaPipe runs on rendered Surrey faces. "
                 "error: median reprojection distance over the renders / face size; spread_mm: median "
                 "distance of the per-render picks from the chosen vertex on the mean face.",
        "views": int(seen.sum()),
        "mediapipe": mediapipe_ids,
        "sfm": sfm_ids,
        "error": errors,
        "spread_mm": spreads,
        "dropped": dropped,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(TABLE))
    parser.add_argument("--views", type=int, default=96)
    args = parser.parse_args()
    table = build(sfm.load(), views=args.views)
    dropped = table.pop("dropped")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({k: v for k, v in table.items() if not isinstance(v, list)}, indent=1)[:-2]
    text += ",\n" + ",\n".join(f' "{k}": {json.dumps(v)}' for k, v in table.items() if isinstance(v, list)) + "\n}\n"
    Path(args.out).write_text(text)
    print(f"{len(table['mediapipe'])} of 468 face points mapped ({table['views']} renders) → {args.out}")


if __name__ == "__main__":
    main()
