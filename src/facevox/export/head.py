"""The fitted head (facevox.head.Head) as files: GLB with its UV texture and 53 blendshapes as morph
targets, OBJ with a material and texture beside it, PLY with vertex colours, and a watertight STL.

The head shares the surface's file frame (facevox.export.files.viewer_frame: centred on the surface,
y up, z towards the viewer, millimetres), so a head and a surface written from one face overlay.
"""

from __future__ import annotations

import io
import re

import numpy as np

from facevox.face import Face, Mesh

GL_ARRAY_BUFFER, GL_ELEMENT_ARRAY_BUFFER = 34962, 34963
GL_LINEAR, GL_LINEAR_MIPMAP_LINEAR, GL_CLAMP_TO_EDGE = 9729, 9987, 33071
MORPH_EPSILON_MM = 1e-3  # morph offsets shorter than this are stored as zero (sparse accessors)
CLOSED_REGIONS = ("eyes", "mouth_interior")  # left out of the STL, whose holes are then closed


def arkit_names(names) -> list[str]:
    """Blendshape names as ARKit spells them: ICT FaceKit's "eyeBlink_L" is ARKit's "eyeBlinkLeft" (ICT
    splits ARKit's one browInnerUp into browInnerUpLeft and browInnerUpRight: 53 in all)."""
    return [re.sub(r"_L$", "Left", re.sub(r"_R$", "Right", str(name))) for name in names]


def head_frame(face: Face):
    """(vertices, blendshape offsets, neutral vertices) of the head in the file frame.

    The neutral vertices are the person's head with every blendshape at zero: the GLB's base mesh,
    which its morph targets move (weights = the fitted expression give back `vertices`)."""
    from facevox.export.files import FLIP, viewer_frame

    head = face.head
    vertices, scale = viewer_frame(face, Mesh(head.vertices, head.faces))
    offsets = head.blendshapes * (scale * FLIP).astype(np.float32)
    neutral = vertices - np.tensordot(np.asarray(head.expression, np.float64), offsets, axes=1)
    return vertices, offsets, neutral


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit normals, area-weighted over the faces around each vertex ((0, 0, 1) for a vertex in none)."""
    from facevox.preview import vertex_normals as weighted_normals

    normals = weighted_normals(vertices, faces)
    normals[np.linalg.norm(normals, axis=1) < 0.5] = (0.0, 0.0, 1.0)
    return normals


def head_mesh(head) -> Mesh:
    """The head as fitted, as a facevox Mesh (photo frame) with vertex colours from its texture."""
    return Mesh(np.asarray(head.vertices, np.float64), np.asarray(head.faces, np.int64), texture_colours(head))


def texture_colours(head) -> np.ndarray:
    """(n, 3) uint8: the texture at each vertex's UV (bilinear; v = 0 is the texture's bottom row, as in OBJ)."""
    texture = np.asarray(head.texture, np.float32)
    size_y, size_x = texture.shape[:2]
    x = np.clip(head.uvs[:, 0], 0, 1) * (size_x - 1)
    y = (1 - np.clip(head.uvs[:, 1], 0, 1)) * (size_y - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, size_x - 1), np.minimum(y0 + 1, size_y - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = texture[y0, x0] * (1 - fx) + texture[y0, x1] * fx
    bottom = texture[y1, x0] * (1 - fx) + texture[y1, x1] * fx
    return np.clip(np.rint(top * (1 - fy) + bottom * fy), 0, 255).astype(np.uint8)


def png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def head_glb(face: Face, **_) -> bytes:
    """Binary glTF 2.0 of the head: positions, normals, UVs and the texture (PNG, embedded) of the
    neutral head, and one morph target per blendshape (sparse: only the vertices it moves), named in
    mesh.extras.targetNames; the mesh's default weights are the fitted expression, so the file shows
    the face as photographed and a weight of 0 really is neutral."""
    from facevox.export.files import GL_FLOAT, GL_TRIANGLES, GL_UNSIGNED_INT, _glb

    head = face.head
    _, offsets, neutral = head_frame(face)
    positions = neutral.astype(np.float32)
    faces = np.asarray(head.faces, np.uint32)
    chunks: list[bytes] = []
    views: list[dict] = []

    def view(data: bytes, target: int | None = None) -> int:
        start = sum(len(c) for c in chunks)
        chunks.append(data + b"\0" * (-len(data) % 4))  # every view starts on a multiple of 4
        views.append({"buffer": 0, "byteOffset": start, "byteLength": len(data)} | ({"target": target} if target else {}))
        return len(views) - 1

    accessors: list[dict] = []

    def accessor(entry: dict) -> int:
        accessors.append(entry)
        return len(accessors) - 1

    def bounds(values: np.ndarray) -> dict:
        return {"min": [float(v) for v in values.min(0)], "max": [float(v) for v in values.max(0)]}

    indices = accessor({"bufferView": view(faces.tobytes(), GL_ELEMENT_ARRAY_BUFFER), "componentType": GL_UNSIGNED_INT,
                        "count": faces.size, "type": "SCALAR"})
    attributes = {
        "POSITION": accessor({"bufferView": view(positions.tobytes(), GL_ARRAY_BUFFER), "componentType": GL_FLOAT,
                              "count": len(positions), "type": "VEC3"} | bounds(positions)),
        "NORMAL": accessor({"bufferView": view(vertex_normals(positions.astype(np.float64), faces.astype(np.int64)).astype(np.float32).tobytes(), GL_ARRAY_BUFFER),
                            "componentType": GL_FLOAT, "count": len(positions), "type": "VEC3"}),
        "TEXCOORD_0": accessor({"bufferView": view(np.column_stack([head.uvs[:, 0], 1 - head.uvs[:, 1]]).astype(np.float32).tobytes(), GL_ARRAY_BUFFER),
                                "componentType": GL_FLOAT, "count": len(positions), "type": "VEC2"}),  # glTF's v runs down the image
    }
    targets = []
    for shape in offsets.astype(np.float32):
        moved = np.flatnonzero(np.abs(shape).max(1) >= MORPH_EPSILON_MM)
        entry = {"componentType": GL_FLOAT, "count": len(shape), "type": "VEC3"}
        stored = np.zeros((1, 3), np.float32)  # the zeros every unmoved vertex keeps
        if len(moved):
            values = shape[moved]
            stored = np.vstack([stored, values]) if len(moved) < len(shape) else values
            entry["sparse"] = {"count": len(moved),
                               "indices": {"bufferView": view(moved.astype(np.uint32).tobytes()), "componentType": GL_UNSIGNED_INT},
                               "values": {"bufferView": view(values.tobytes())}}
        targets.append({"POSITION": accessor(entry | bounds(stored))})
    image = view(png(head.texture))
    gltf = {
        "asset": {"version": "2.0", "generator": "facevox"}, "scene": 0, "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": "head"}],
        "meshes": [{"name": "head", "primitives": [{"attributes": attributes, "indices": indices, "mode": GL_TRIANGLES,
                                                     "material": 0, "targets": targets}],
                    "weights": [float(w) for w in np.clip(head.expression, 0, 1)],
                    "extras": {"targetNames": arkit_names(head.blendshape_names)}}],
        "materials": [{"name": "skin", "pbrMetallicRoughness": {"baseColorTexture": {"index": 0}, "metallicFactor": 0.0,
                                                                 "roughnessFactor": 0.75}}],
        "textures": [{"sampler": 0, "source": 0}],
        "samplers": [{"magFilter": GL_LINEAR, "minFilter": GL_LINEAR_MIPMAP_LINEAR, "wrapS": GL_CLAMP_TO_EDGE, "wrapT": GL_CLAMP_TO_EDGE}],
        "images": [{"bufferView": image, "mimeType": "image/png"}],
        "accessors": accessors,
        "bufferViews": views,
        "buffers": [{"byteLength": sum(len(c) for c in chunks)}],
    }
    return _glb(gltf, [np.frombuffer(b"".join(chunks), np.uint8)])


def head_obj(face: Face, name: str | None = None, **_) -> bytes:
    """Wavefront OBJ of the head as fitted: positions with vertex colours from the texture, UVs and
    normals; with `name`, it uses the material NAME.mtl, whose texture is NAME.png (head_obj_material)."""
    head = face.head
    vertices = head_frame(face)[0]
    out = io.StringIO()
    out.write("# facevox head (ICT FaceKit topology): y up, z towards the viewer, millimetres\n")
    if name:
        out.write(f"mtllib {name}.mtl\n")
    np.savetxt(out, np.column_stack([vertices, texture_colours(head) / 255.0]), fmt="v %.4f %.4f %.4f %.4f %.4f %.4f")
    np.savetxt(out, head.uvs, fmt="vt %.6f %.6f")
    np.savetxt(out, vertex_normals(vertices, np.asarray(head.faces, np.int64)), fmt="vn %.4f %.4f %.4f")
    if name:
        out.write("usemtl skin\n")
    corners = np.repeat(np.asarray(head.faces, np.int64) + 1, 3, axis=1)  # v/vt/vn share each vertex's number
    np.savetxt(out, corners, fmt="f %d/%d/%d %d/%d/%d %d/%d/%d")
    return out.getvalue().encode()


def head_obj_material(face: Face, name: str) -> dict[str, bytes]:
    """The files an OBJ named NAME.obj refers to: NAME.mtl and its texture NAME.png."""
    material = f"newmtl skin\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nd 1\nillum 1\nmap_Kd {name}.png\n"
    return {f"{name}.mtl": material.encode(), f"{name}.png": png(face.head.texture)}


def head_ply(face: Face, **_) -> bytes:
    """Binary PLY of the head as fitted, with vertex colours sampled from its texture."""
    import trimesh

    head = face.head
    colours = np.column_stack([texture_colours(head), np.full(len(head.uvs), 255, np.uint8)])
    body = trimesh.Trimesh(head_frame(face)[0], head.faces, vertex_colors=colours, process=False)
    return body.export(file_type="ply", encoding="binary")


def head_stl(face: Face, size_mm: float | None = None, **_) -> bytes:
    """Binary STL of the head closed into one watertight solid (closed_head), for 3D printing."""
    import trimesh

    vertices, faces = closed_head(head_frame(face)[0], np.asarray(face.head.faces, np.int64), face.head.regions)
    if size_mm:  # the solid's largest extent, that many millimetres
        vertices = vertices * (size_mm / np.ptp(vertices, axis=0).max())
    return trimesh.Trimesh(vertices, faces, process=False).export(file_type="stl")


def closed_head(vertices: np.ndarray, faces: np.ndarray, regions: dict) -> tuple[np.ndarray, np.ndarray]:
    """The head as one closed surface: the eyes and the mouth's interior left out, vertices that share a
    position (UV seams) merged, the largest connected piece kept (the skin), and every hole in it (eye
    sockets, mouth, neck) closed by a fan of triangles around the hole's centre."""
    left_out = np.zeros(len(vertices), bool)
    for region in CLOSED_REGIONS:
        left_out[np.asarray(regions.get(region, []), np.int64)] = True
    faces = faces[~left_out[faces].any(1)]
    unique, inverse = np.unique(vertices, axis=0, return_inverse=True)
    faces = inverse.reshape(-1)[faces]
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])]
    faces = _largest_piece(faces, len(unique))
    used, faces = np.unique(faces, return_inverse=True)
    vertices, faces = unique[used], faces.reshape(-1, 3)
    extra_vertices, extra_faces = [], []
    for loop in boundary_loops(faces):
        centre = len(vertices) + len(extra_vertices)
        extra_vertices.append(vertices[loop].mean(0))
        # the hole's edges run a→b in the surface's own triangles; the fan runs them b→a, so it winds the same way
        extra_faces.append(np.column_stack([np.roll(loop, -1), loop, np.full(len(loop), centre)]))
    if extra_vertices:
        vertices = np.vstack([vertices, extra_vertices])
        faces = np.vstack([faces, *extra_faces])
    return vertices, faces


def _largest_piece(faces: np.ndarray, count: int) -> np.ndarray:
    """The faces of the largest piece connected through shared vertices."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    edges = np.vstack([faces[:, [0, 1]], faces[:, [1, 2]]])
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(count, count))
    _, labels = connected_components(graph, directed=False)
    piece_of_face = labels[faces[:, 0]]
    return faces[piece_of_face == np.bincount(piece_of_face).argmax()]


def boundary_loops(faces: np.ndarray) -> list[np.ndarray]:
    """The holes of a surface: loops of vertex ids along the edges that only one triangle uses, each
    in the direction those edges run in their triangles."""
    edges = np.vstack([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    key = np.sort(edges, axis=1)
    _, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    boundary = edges[counts[inverse.reshape(-1)] == 1]
    following: dict[int, list[int]] = {}
    for a, b in boundary.tolist():
        following.setdefault(a, []).append(b)
    loops = []
    while following:
        start = next(iter(following))
        loop, vertex = [start], start
        while True:
            ahead = following[vertex]
            nxt = ahead.pop()
            if not ahead:
                del following[vertex]
            if nxt == start:
                break
            loop.append(nxt)
            vertex = nxt
            if vertex not in following:  # an open chain (a pinched boundary): stop here
                break
        if len(loop) >= 3:
            loops.append(np.array(loop))
    return loops
