"""The ICT FaceKit head for training: its mesh and modes as arrays, and a fixed map to the Surrey model.

    python -m training.ict_head --out cache/ict-face    # ../shared/data/ict-face → cache/ict-face/model.npz (5.3 MB) + LICENSE

`load_head` reads either the data set's model.npz (../shared/data/ict-face/, MIT licence, 16.5 MB) or
the smaller pack `pack` writes (the parts a photo can show, modes as int8 with one scale per mode), so
a GPU machine can take it in a carried `cache/` folder. Units here: millimetres, the model's frame
(x to the subject's left, y up, z out of the face).

`surrey_correspondence` ties the two models together: the ICT neutral head is moved onto the Surrey
mean face (a similarity fit of the 47 inner landmarks both models place alike, then a thin-plate
warp through them), and each Surrey vertex takes the nearest ICT skin vertex. The Surrey landmark
vertices, whatever convention `training.sfm.load` chose, so map to ICT vertices at the same places
on the face; jaw points land on ICT's surface where the Surrey contour runs.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

DEFAULT_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ict-face"
KEPT = 24591  # source vertices 0..24590: face, head and neck, mouth and eye sockets, gums, tongue, teeth, eyeballs
SKIN = (0, 11248)  # face, back of the head, ears and neck
BACK_OF_HEAD = (9409, 11248)
MOUTH_SOCKET = (11248, 13294)
EYE_SOCKETS = (13294, 14062)
GUMS_TONGUE = (14062, 17039)
TEETH = (17039, 21451)
EYEBALLS = {"left": (21451, 23021), "right": (23021, 24591)}  # subject's left / right: sclera then iris
IRISES = {"left": (22221, 23021), "right": (23791, 24591)}
# Inner landmarks (0-based iBUG) the warp pins: all 51 but the nose bridge 28, 29 and the inner mouth
# corners 61, 65, where the Surrey conventions deliberately place the points elsewhere.
FOOTPRINT_SMOOTHING = 4  # rounds of neighbour averaging that straighten the face region's ragged edge
PINNED = [i for i in range(17, 68) if i not in (27, 28, 60, 64)]


@dataclass
class IctHead:
    """neutral (n, 3), identity (k, n, 3), expression (53, n, 3) in mm; triangles (m, 3) wound outwards."""

    neutral: np.ndarray
    identity: np.ndarray
    expression: np.ndarray
    expression_names: list[str]
    triangles: np.ndarray
    landmarks: np.ndarray  # (68,) the model's own iBUG-68 vertices


def _triangles(quads: np.ndarray, materials: np.ndarray, quad_material: np.ndarray) -> np.ndarray:
    kept = np.isin(materials[quad_material], ["M_Face", "M_BackHead", "M_GumsTongue", "M_Teeth", "M_ScleraLeft",
                                             "M_IrisLeft", "M_ScleraRight", "M_IrisRight"])
    quads = quads[kept]
    assert quads.max() < KEPT
    return np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]][quads[:, 2] != quads[:, 3]]]).astype(np.int64)


def load_head(path: str | Path = DEFAULT_DIR) -> IctHead:
    """The head from the data set's model.npz or from `pack`'s file (a folder: its model.npz)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.npz"
    with np.load(path) as data:
        def modes(name):
            values = data[name][:, :KEPT].astype(np.float32)
            if name + "_scale" in data:
                values *= data[name + "_scale"][:, None, None]
            return values * 10.0  # cm → mm

        return IctHead(
            neutral=data["neutral"][:KEPT].astype(np.float32) * 10.0,
            identity=modes("identity"), expression=modes("expression"),
            expression_names=[str(n) for n in data["expression_names"]],
            triangles=_triangles(data["quads"], data["materials"], data["quad_material"]),
            landmarks=data["landmarks68"].astype(np.int64),
        )


def pack(source: Path, folder: Path) -> dict:
    """The training subset of the data set's model.npz (centimetres, as there) as folder/model.npz, with
    the licence beside it: kept vertices only, identity and expression modes as int8 with one float32
    scale per mode (error ≤ 0.2 mm)."""
    with np.load(Path(source) / "model.npz") as data:
        arrays = {k: data[k] for k in ("quads", "quad_material", "materials", "expression_names", "landmarks68")}
        arrays["neutral"] = data["neutral"][:KEPT]
        for name in ("identity", "expression"):
            modes = data[name][:, :KEPT].astype(np.float32)
            scale = np.maximum(np.abs(modes).reshape(len(modes), -1).max(1) / 127.0, 1e-12).astype(np.float32)
            arrays[name] = np.round(modes / scale[:, None, None]).astype(np.int8)
            arrays[name + "_scale"] = scale
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / "model.npz", **arrays)
    shutil.copyfile(Path(source) / "LICENSE", folder / "LICENSE")
    return {"bytes": (folder / "model.npz").stat().st_size}


def in_surrey_frame(head: IctHead, surrey) -> IctHead:
    """The head turned (not moved or scaled) so that its inner landmarks face as the Surrey mean face's do
    (the ICT head's own frame is pitched about 6° from it): a pose means the same for both models."""
    _, rotation, _ = similarity_fit(head.neutral[head.landmarks[17:]].astype(np.float64), surrey.mean[surrey.landmarks[17:]])
    turn = lambda a: (a.astype(np.float64) @ rotation.T).astype(np.float32)
    return replace(head, neutral=turn(head.neutral), identity=turn(head.identity), expression=turn(head.expression))


def similarity_fit(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(scale, rotation, translation) minimising |scale · R · source + t − target|² (Umeyama)."""
    ms, mt = source.mean(0), target.mean(0)
    u, singular, vt = np.linalg.svd((target - mt).T @ (source - ms))
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ d @ vt
    scale = np.trace(np.diag(singular) @ d) / ((source - ms) ** 2).sum()
    return scale, rotation, mt - scale * rotation @ ms


def thin_plate_warp(points: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Move `points` by the 3D thin-plate spline (kernel |r|) that takes `source` exactly to `target`."""
    k = len(source)
    kernel = np.linalg.norm(source[:, None] - source[None], axis=-1)
    affine = np.c_[np.ones(k), source]
    system = np.block([[kernel, affine], [affine.T, np.zeros((4, 4))]])
    coefficients = np.linalg.solve(system, np.r_[target, np.zeros((4, 3))])
    weights, linear = coefficients[:k], coefficients[k:]
    return np.linalg.norm(points[:, None] - source[None], axis=-1) @ weights + np.c_[np.ones(len(points)), points] @ linear


@dataclass
class Correspondence:
    """The ICT head on the Surrey mean face, and the maps between their vertices.

    placed (n, 3): the ICT neutral in the mean face's frame (similarity + warp); rigid (n, 3): the same
    after the similarity fit alone; surrey_to_ict (3448,) the ICT skin vertex nearest each Surrey
    vertex; footprint (n,) bool: ICT vertices within the Surrey mesh's extent (the face the network outputs),
    eyeballs, sockets, teeth and mouth interior included."""

    placed: np.ndarray
    rigid: np.ndarray
    surrey_to_ict: np.ndarray
    footprint: np.ndarray


def _outline_outwards(mean: np.ndarray, triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Surrey mesh's outer boundary (bool, (n,): its longest boundary loop, not the mouth's) and, per
    vertex, the direction from its neighbours to it within the surface (outwards, on the boundary)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    edges = np.sort(np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]]), axis=1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    loops = unique[counts == 1]
    graph = coo_matrix((np.ones(len(loops)), (loops[:, 0], loops[:, 1])), shape=(len(mean),) * 2)
    _, label = connected_components(graph, directed=False)
    on_loop = np.zeros(len(mean), bool)
    on_loop[loops.ravel()] = True
    outline = on_loop & (label == np.bincount(label[on_loop]).argmax())
    neighbour_sum = np.zeros_like(mean)
    neighbour_count = np.zeros(len(mean))
    for a, b in ((0, 1), (1, 0)):
        np.add.at(neighbour_sum, unique[:, a], mean[unique[:, b]])
        np.add.at(neighbour_count, unique[:, a], 1)
    outwards = mean - neighbour_sum / np.maximum(neighbour_count, 1)[:, None]
    a, b, c = (mean[triangles[:, i]] for i in range(3))
    normals = np.zeros_like(mean)
    for i in range(3):
        np.add.at(normals, triangles[:, i], np.cross(b - a, c - a))
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-9)
    outwards -= (outwards * normals).sum(1, keepdims=True) * normals  # along the surface, not off it
    return outline, outwards / np.maximum(np.linalg.norm(outwards, axis=1, keepdims=True), 1e-9)


def distance_to_outline(surrey) -> np.ndarray:
    """(n,) each Surrey mean-face vertex's distance along the mesh (mm) from the face's outer boundary."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    outline, _ = _outline_outwards(surrey.mean, surrey.triangles)
    edges = np.concatenate([surrey.triangles[:, [0, 1]], surrey.triangles[:, [1, 2]], surrey.triangles[:, [2, 0]]])
    lengths = np.linalg.norm(surrey.mean[edges[:, 0]] - surrey.mean[edges[:, 1]], axis=1)
    graph = coo_matrix((lengths, (edges[:, 0], edges[:, 1])), shape=(len(surrey.mean),) * 2).tocsr()
    return dijkstra(graph, directed=False, indices=np.flatnonzero(outline), min_only=True)


def _adjacency(triangles: np.ndarray, n: int):
    """(n, n) sparse vertex adjacency of a mesh, each vertex its own neighbour too."""
    from scipy.sparse import coo_matrix

    edges = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    ids = np.r_[edges[:, 0], edges[:, 1], np.arange(n)]
    others = np.r_[edges[:, 1], edges[:, 0], np.arange(n)]
    adjacency = coo_matrix((np.ones(len(ids)), (ids, others)), shape=(n, n)).tocsr()
    adjacency.data[:] = 1.0
    return adjacency


def _reached(allowed: np.ndarray, triangles: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Vertices connected to `start` through `allowed` vertices only (bool (n,))."""
    from scipy.sparse.csgraph import connected_components

    adjacency = _adjacency(triangles, len(allowed)).tocoo()
    keep = allowed[adjacency.row] & allowed[adjacency.col]
    adjacency = type(adjacency)((adjacency.data[keep], (adjacency.row[keep], adjacency.col[keep])), shape=adjacency.shape)
    _, label = connected_components(adjacency, directed=False)
    return allowed & np.isin(label, label[start[allowed[start]]])


def smooth_on_mesh(values: np.ndarray, triangles: np.ndarray, rounds: int) -> np.ndarray:
    """Per-vertex values averaged with their mesh neighbours' `rounds` times."""
    adjacency = _adjacency(triangles, len(values))
    degree = np.asarray(adjacency.sum(1)).ravel()
    for _ in range(rounds):
        values = adjacency @ values / degree
    return values


def surrey_correspondence(head: IctHead, surrey) -> Correspondence:
    """Fix the ICT ↔ Surrey vertex maps on the mean faces (see the module docstring)."""
    ours = surrey.mean[surrey.landmarks]
    scale, rotation, shift = similarity_fit(head.neutral[head.landmarks[17:]].astype(np.float64), ours[17:])
    rigid = scale * head.neutral.astype(np.float64) @ rotation.T + shift
    placed = thin_plate_warp(rigid, rigid[head.landmarks[PINNED]], ours[PINNED])
    skin = np.arange(*SKIN)
    surrey_to_ict = skin[cKDTree(placed[skin]).query(surrey.mean)[1]]
    distance, ict_to_surrey = cKDTree(surrey.mean).query(placed)
    outline, outwards = _outline_outwards(surrey.mean, surrey.triangles)
    offset = placed - surrey.mean[ict_to_surrey]
    beyond = outline[ict_to_surrey] & ((offset * outwards[ict_to_surrey]).sum(1) > 0.5)
    near = np.ones(len(placed), bool)  # eyeballs, sockets, teeth and mouth count as inside the face
    near[skin] = (distance[skin] < 6.0) & ~beyond[skin]
    outside = _reached(~near, head.triangles, start=np.arange(*BACK_OF_HEAD))  # far parts that enclose no hole: nostrils stay in
    footprint = smooth_on_mesh((~outside).astype(np.float64), head.triangles, FOOTPRINT_SMOOTHING) > 0.5
    return Correspondence(placed, rigid, surrey_to_ict, footprint)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--out", type=Path, default=Path("cache/ict-face"), help="folder for model.npz and LICENSE")
    args = parser.parse_args()
    print(pack(args.source, args.out))
