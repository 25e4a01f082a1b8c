"""Pack the ICT FaceKit head model into the small file the runtime's `facevox.head` reads.

    python -m training.pack_ict                      # ../shared/data/ict-face/model.npz → src/facevox/models/ict_head.npz

Kept: the face, the back of the head with ears and neck, the mouth socket, the eye sockets and the
eyeballs (sclera, iris); dropped: gums, tongue, teeth, lacrimal fluid, eye blend and occlusion
meshes, eyelashes. The first IDENTITY_MODES identity modes and all 53 ARKit expressions, as int8
with one scale per mode, per source vertex (the runtime repeats them for the vertices split along UV
seams). Quads become triangles; the UDIM tiles of the materials are laid out in one square texture.
Units: millimetres; frame of the model (x to the subject's left, y up, z out of the face).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "ict-face"
TARGET = ROOT / "src" / "facevox" / "models" / "ict_head.npz"
IDENTITY_MODES = 100
FIT_SAMPLES = 1500  # face vertices the dense fit uses (fixed subset)
NARROW_FACE = 6706  # vertices 0..6705: the narrow face area (the model's README)
MOUTH_SOCKET = (11248, 13294)
EYEBALLS = (21451, 24591)
KEPT_SOURCE = np.r_[np.arange(14062), np.arange(*EYEBALLS)]  # face, head and neck, sockets; eyeballs

# Material → (u0, v0, size) of its cell in the packed texture, in texture fractions (v up, OBJ style).
LAYOUT = {
    "M_Face": (0.0, 0.25, 0.75),
    "M_BackHead": (0.75, 0.75, 0.25),
    "M_ScleraLeft": (0.75, 0.625, 0.125),
    "M_IrisLeft": (0.875, 0.625, 0.125),
    "M_ScleraRight": (0.75, 0.5, 0.125),
    "M_IrisRight": (0.875, 0.5, 0.125),
}
CELL_MARGIN = 0.02  # share of a cell left empty on each side, so islands do not bleed into each other


def quantise(modes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(k, n, 3) float → int8 values and (k,) float32 scales (value · scale ≈ mode)."""
    scales = np.abs(modes).reshape(len(modes), -1).max(1) / 127.0
    scales = np.maximum(scales, 1e-12).astype(np.float32)
    return np.round(modes / scales[:, None, None]).astype(np.int8), scales


def farthest_points(points: np.ndarray, count: int) -> np.ndarray:
    """Indices of `count` points spread evenly over `points` (greedy farthest-point sampling)."""
    chosen = [0]
    distance = np.linalg.norm(points - points[0], axis=1)
    for _ in range(count - 1):
        chosen.append(int(distance.argmax()))
        distance = np.minimum(distance, np.linalg.norm(points - points[chosen[-1]], axis=1))
    return np.array(chosen)


def pack(source: Path, target: Path, identity_modes: int = IDENTITY_MODES) -> dict:
    model = np.load(source / "model.npz")
    materials = list(model["materials"])
    quads, quad_uvs, quad_material = model["quads"], model["quad_uvs"], model["quad_material"]
    keep_quads = np.isin(quad_material, [materials.index(name) for name in LAYOUT])
    quads, quad_uvs, quad_material = quads[keep_quads], quad_uvs[keep_quads], quad_material[keep_quads]
    source_to_kept = np.full(len(model["neutral"]), -1)
    source_to_kept[KEPT_SOURCE] = np.arange(len(KEPT_SOURCE))
    assert (source_to_kept[quads] >= 0).all()

    # Each UV corner moved into its material's cell of the one texture.
    uvs = model["uvs"][quad_uvs].astype(np.float64)  # (q, 4, 2)
    for index, (u0, v0, size) in ((materials.index(n), cell) for n, cell in LAYOUT.items()):
        part = quad_material == index
        local = uvs[part] - np.floor(uvs[part].reshape(-1, 2).min(0))  # the UDIM tile → [0, 1]
        uvs[part] = np.array([u0, v0]) + size * (CELL_MARGIN + (1 - 2 * CELL_MARGIN) * local)

    # One vertex per (source vertex, uv) pair: uv becomes per vertex.
    corners = np.stack([source_to_kept[quads].ravel(), *np.round(uvs.reshape(-1, 2) * 2**20).astype(np.int64).T], 1)
    unique, first, inverse = np.unique(corners, axis=0, return_index=True, return_inverse=True)
    vertex_source = unique[:, 0]
    vertex_uvs = uvs.reshape(-1, 2)[first].astype(np.float32)
    corner_ids = inverse.reshape(-1, 4)
    triangles = np.concatenate([corner_ids[:, [0, 1, 2]], corner_ids[:, [0, 2, 3]][quads[:, 2] != quads[:, 3]]])

    neutral = model["neutral"][KEPT_SOURCE].astype(np.float64) * 10.0  # cm → mm
    identity = model["identity"][:identity_modes, KEPT_SOURCE].astype(np.float64) * 10.0
    expression = model["expression"][:, KEPT_SOURCE].astype(np.float64) * 10.0
    identity_q, identity_scale = quantise(identity)
    expression_q, expression_scale = quantise(expression)

    # The model is mirror-symmetric vertex for vertex: each vertex's twin across x = 0.
    from scipy.spatial import cKDTree

    mirrored = neutral[vertex_source] * np.array([-1.0, 1.0, 1.0])
    twin_distance, twin = cKDTree(neutral[vertex_source]).query(mirrored)  # any copy of the twin: same position
    mirror = twin.astype(np.int32)

    first_copy = np.full(len(KEPT_SOURCE), -1)
    first_copy[vertex_source[::-1]] = np.arange(len(vertex_source))[::-1]
    landmarks = first_copy[source_to_kept[model["landmarks68"]]]
    material_of_vertex = np.full(len(vertex_source), -1)
    material_of_vertex[corner_ids.ravel()] = np.repeat(quad_material, 4)
    eyes = np.flatnonzero(np.isin(material_of_vertex, [materials.index(n) for n in LAYOUT if "Sclera" in n or "Iris" in n]))
    face_region = np.flatnonzero(material_of_vertex == materials.index("M_Face"))
    mouth_interior = np.flatnonzero((vertex_source >= MOUTH_SOCKET[0]) & (vertex_source < MOUTH_SOCKET[1]))
    narrow = np.flatnonzero(vertex_source < NARROW_FACE)
    narrow = narrow[np.unique(vertex_source[narrow], return_index=True)[1]]  # one copy per source vertex
    fit_samples = narrow[farthest_points(neutral[vertex_source[narrow]], FIT_SAMPLES)]

    target.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        target,
        neutral=neutral.astype(np.float32),
        identity=identity_q, identity_scale=identity_scale,
        expression=expression_q, expression_scale=expression_scale,
        expression_names=np.array(model["expression_names"]),
        vertex_source=vertex_source.astype(np.int32), uvs=vertex_uvs, triangles=triangles.astype(np.int32),
        mirror=mirror, landmarks68=landmarks.astype(np.int32), fit_samples=fit_samples.astype(np.int32),
        region_face=face_region.astype(np.int32), region_eyes=eyes.astype(np.int32),
        region_mouth_interior=mouth_interior.astype(np.int32),
    )
    shutil.copyfile(source / "LICENSE", target.parent / "ICT-FaceKit-LICENSE.txt")
    return {
        "vertices": len(vertex_source), "triangles": len(triangles), "bytes": target.stat().st_size,
        "mirror_max_mm": float(twin_distance.max()),
        "identity_quantisation_mm": float(np.abs(identity_q * identity_scale[:, None, None] - identity).max()),
        "expression_quantisation_mm": float(np.abs(expression_q * expression_scale[:, None, None] - expression).max()),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--out", type=Path, default=TARGET)
    parser.add_argument("--identity-modes", type=int, default=IDENTITY_MODES)
    args = parser.parse_args()
    print(pack(args.source, args.out, args.identity_modes))
