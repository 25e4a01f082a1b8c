"""The whole pipeline in one object: photo → faces → crop → volume → mesh (+ landmarks, pose).

    import facevox
    faces = facevox.reconstruct("photo.jpg")          # one call, model loaded on first use
    recon = facevox.Reconstructor()                   # or load once, reuse for many photos
    for face in recon("photo.jpg"): ...
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from facevox import crop as crop_rule
from facevox import mesh, pose
from facevox.errors import NoFaceError
from facevox.face import Face, Mesh
from facevox.faces import Detection, decode_reduction, default_detectors, detect_faces, tiers
from facevox.image import Photo, PhotoFile
from facevox.rules import RULES
from facevox.volume import load_network


MESH_CHOICES = ("head", "surface", "both")


@dataclass
class Settings:
    """How meshes are made. mesh: "head" (default) fits the ICT head to each face (Face.head: closed,
    the same vertices every time, a UV texture, 53 ARKit blendshapes; facevox.head), "surface" keeps
    only the volumetric surface of the visible face (Face.mesh, always made), "both" both. smooth: Taubin iterations of the closed body (solid); max_triangles:
    decimate above this (0 = never); refine: re-crop once from the network's own landmarks (steadier
    crops, twice the network time); min_evidence: drop a detection where the network's landmark
    heatmaps peak below this on average (`facevox.landmarks.face_evidence`; 0 keeps every detection;
    where a network stage leaves the heatmaps out, as the GPU batch path does, nothing is dropped); mirror: average the second pass's volume and landmark maps with
    those of the mirrored crop (facevox.volume.VolumeModel's mirror: smaller surface and landmark errors
    for a third network run; applies to the default onnxruntime network, a `network` passed in keeps its
    own)."""

    smooth: int = 10
    max_triangles: int = 0
    refine: bool = True
    mirror: bool = True
    solid: bool = False  # also build the surface's closed body (Face.extras['solid']) for its STL
    mesh: str = "head"
    min_evidence: float = RULES["min_evidence"]

    def __post_init__(self):
        if self.mesh not in MESH_CHOICES:
            raise ValueError(f"unknown mesh {self.mesh!r}; choose from {', '.join(MESH_CHOICES)}")


class Reconstructor:
    """Loads the network and the face detectors once; call it on photos.

    network: the volume stage, any object with VolumeModel's interface, `surface=False` (landmarks only) included
    (e.g. facevox.torch_volume.TorchVolumeModel on a GPU); by default the model at model_path (a file, or a shipped
    model's name: "vrn-hg2-w192", the default, dense; "hsp-hg2-w192", hierarchical, docs/hsp.md) on onnxruntime
    (facevox.volume.load_network)."""

    def __init__(self, model_path=None, detectors=None, settings: Settings | None = None, threads: int | None = None, network=None):
        self.settings = settings or Settings()
        self.model = network if network is not None else load_network(model_path, threads=threads, mirror=self.settings.mirror)
        self.detectors = detectors if detectors is not None else default_detectors()
        self.mean_landmarks = np.asarray(self.model.info["mean_landmarks_3d"], dtype=np.float64)
        self.timings: dict[str, float] = {}

    def __call__(self, source, all_faces: bool = True) -> list[Face]:
        return self.reconstruct(source, all_faces)

    def reconstruct(self, source, all_faces: bool = True) -> list[Face]:
        """All faces in the photo (a path, bytes, file object, PIL image, array or PhotoFile), largest
        first (only the largest if all_faces is False). Raises FacevoxError for an unreadable photo and
        NoFaceError when no face is found."""
        clock = Clock()
        file = source if isinstance(source, PhotoFile) else PhotoFile(source)
        photo, detections = self.find_faces(file, clock)
        faces = []
        for tier in tiers(detections):
            photo = self.decoded_for(file, photo, tier, clock)
            for detection in tier:
                face = self.reconstruct_face(photo, detection, clock)
                if face is not None:
                    faces.append(face)
                    if not all_faces:
                        break
            if faces:
                break
        self.timings = clock.laps
        if not faces:
            raise NoFaceError("no face found in the photo")
        return faces

    def find_faces(self, source, clock: "Clock | None" = None) -> tuple[Photo, list[Detection]]:
        """The photo, decoded as small as its faces allow (a large JPEG at 1/2 to 1/8 of its size: far
        faster), and the faces' boxes in the photo's own pixels, largest first. NoFaceError if none.
        The size decoded serves the detections checked first (`tiers`): the confident ones if any."""
        clock = clock or Clock()
        file = source if isinstance(source, PhotoFile) else PhotoFile(source)
        photo = file.decode(decode_reduction(file.size))
        clock.lap("decode")
        detections = [replace(d, box=crop_rule.apply(photo.to_photo(), d.box.reshape(2, 2)).ravel())
                      for d in detect_faces(photo.pixels, self.detectors)]
        clock.lap("detect")
        if not detections:
            raise NoFaceError("no face found in the photo")
        first = next(tier for tier in tiers(detections) if tier)
        return self.decoded_for(file, photo, first, clock), detections

    def decoded_for(self, file: PhotoFile, photo: Photo, detections: list[Detection], clock: "Clock") -> Photo:
        """`photo`, or `file` decoded finer where one of the detections is a face too small for its pixels."""
        if not detections:
            return photo
        finest = min(crop_rule.reduction(d.box, self.model.input_size) for d in detections)
        if finest < photo.reduction:
            photo = file.decode(finest)
            clock.lap("decode")
        return photo

    def reconstruct_face(self, photo: Photo | np.ndarray, detection: Detection, clock: "Clock | None" = None) -> Face:
        """One face, from a detection (a face box in photo pixels) and the decoded photo (or an image
        array, the photo at full size); None where the network sees no face there (Settings.min_evidence)."""
        clock = clock or Clock()
        photo = photo if isinstance(photo, Photo) else Photo(photo)
        pixels_to_photo, size = photo.to_photo(), self.model.input_size

        def crop(matrix: np.ndarray) -> np.ndarray:  # matrix: photo → crop
            return crop_rule.crop_image(photo.pixels, crop_rule.chain(matrix, pixels_to_photo), size)

        matrix = crop_rule.crop_matrix(detection.box, size)
        refine = self.settings.refine  # then the first pass needs only the landmarks
        output = self.model(crop(matrix), surface=not refine)[0]
        evidence = output.evidence()
        if evidence is not None and evidence < self.settings.min_evidence:
            return None
        points = output.landmarks(size)
        if refine:  # the network's landmarks give the face box exactly by the crop rule's convention
            marks = mesh.points_to_photo(points, matrix)[:, :2]
            matrix = crop_rule.crop_matrix(np.r_[marks.min(0), marks.max(0)], size)
            output = self.model(crop(matrix))[0]
            points = output.landmarks(size)
        clock.lap("network")
        surface = mesh.surface_from_depth(*output.front_depth())
        if self.settings.max_triangles:
            surface = mesh.decimate(surface, self.settings.max_triangles)
        clock.lap("mesh")
        colours = mesh.colour_from_photo(mesh.to_photo(surface, crop_rule.chain(matrix, pixels_to_photo)), photo.pixels).colours
        surface = Mesh(mesh.points_to_photo(surface.vertices, matrix), surface.triangles, colours)
        clock.lap("colour")
        extras = {"crop_matrix": matrix}
        if self.settings.solid:
            extras["solid"] = mesh.to_photo(mesh.solid_mesh(output.dense_volume(), smooth_iterations=self.settings.smooth), matrix)
            clock.lap("solid")
        points_photo = mesh.points_to_photo(points, matrix)
        yaw, pitch, roll = pose.head_pose(points, self.mean_landmarks)
        face = Face(
            box=np.asarray(detection.box, dtype=np.float64), score=detection.score,
            landmarks_2d=points_photo[:, :2], landmarks_3d=points_photo,
            yaw=yaw, pitch=pitch, roll=roll, mesh=surface, extras=extras,
        )
        if self.settings.mesh != "surface":
            from facevox.head import fit_head

            face.head = fit_head(face, full_size(photo, face.box))
            clock.lap("head")
        return face


def full_size(photo: Photo, box: np.ndarray) -> np.ndarray:
    """The photo's pixels at the photo's own size, whose pixel (x, y) is photo pixel (x, y), as
    facevox.head.fit_head samples its texture there. A reduced decoding's pixels are repeated, only
    around the face box (a box's size on each side): the rest stays zero, in pages never touched."""
    pixels, r = photo.pixels, photo.reduction
    if r == 1:
        return pixels
    full = np.zeros((pixels.shape[0] * r, pixels.shape[1] * r, 3), np.uint8)
    x0, y0, x1, y1 = np.asarray(box, dtype=np.float64)
    columns = slice(max(int((2 * x0 - x1) // r), 0), min(int((2 * x1 - x0) // r) + 1, pixels.shape[1]))
    rows = slice(max(int((2 * y0 - y1) // r), 0), min(int((2 * y1 - y0) // r) + 1, pixels.shape[0]))
    full[rows.start * r : rows.stop * r, columns.start * r : columns.stop * r] = np.repeat(np.repeat(pixels[rows, columns], r, axis=0), r, axis=1)
    return full


class Clock:
    """Seconds per named stage: each lap adds the time since the previous one (`timer`: wall clock by
    default; time.process_time for CPU time)."""

    def __init__(self, timer=time.perf_counter):
        self.laps: dict[str, float] = {}
        self._timer = timer
        self._last = timer()

    def lap(self, name: str) -> None:
        now = self._timer()
        self.laps[name] = self.laps.get(name, 0.0) + now - self._last
        self._last = now


_default: Reconstructor | None = None


def reconstruct(source, all_faces: bool = True) -> list[Face]:
    """facevox in one call: every face in a photo (path, bytes, PIL image or array), largest first."""
    global _default
    if _default is None:
        _default = Reconstructor()
    return _default.reconstruct(source, all_faces)
