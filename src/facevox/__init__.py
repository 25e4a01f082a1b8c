"""facevox: one photo of a face in, a 3D model of that face out.

    import facevox
    faces = facevox.reconstruct("photo.jpg")      # list of Face, largest first
    open("face.glb", "wb").write(facevox.export(faces[0], "glb"))
"""

from facevox.api import Reconstructor, Settings, reconstruct
from facevox.errors import FacevoxError, NoFaceError
from facevox.export import FORMATS, export
from facevox.face import Face, Mesh
from facevox.image import load_image

__all__ = ["Reconstructor", "Settings", "reconstruct", "export", "FORMATS", "Face", "Mesh", "load_image", "FacevoxError", "NoFaceError"]
__version__ = "0.1.0"
