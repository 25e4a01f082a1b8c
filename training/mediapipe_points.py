"""MediaPipe's face mesh (478 points: 468 face points + 10 iris points) on RGB photos, quietly.

Points come back in photo pixels with pixel centres at integer coordinates (facevox's convention):
x, y, and MediaPipe's relative depth z scaled like x (smaller is nearer the camera).
"""

from __future__ import annotations

import atexit

import numpy as np

from facevox.faces import _quiet_native_logs

NUM_POINTS = 478
IRIS = range(468, 478)


class FaceMeshPoints:
    """Static-image face mesh with refined (attention) landmarks; up to `max_faces` faces per photo."""

    def __init__(self, max_faces: int = 1, min_score: float = 0.5):
        from mediapipe.python.solutions import face_mesh

        with _quiet_native_logs():
            self._mesh = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=max_faces, refine_landmarks=True,
                                            min_detection_confidence=min_score)
            self._mesh.process(np.zeros((64, 64, 3), np.uint8))
        atexit.register(self.close)

    def __call__(self, image: np.ndarray) -> list[np.ndarray]:
        """All faces found in an RGB uint8 photo: a list of (478, 3) arrays (x, y, z) in pixels."""
        height, width = image.shape[:2]
        with _quiet_native_logs():
            result = self._mesh.process(np.ascontiguousarray(image))
        faces = []
        for face in result.multi_face_landmarks or []:
            points = np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float64)
            faces.append(np.column_stack([points[:, 0] * width - 0.5, points[:, 1] * height - 0.5, points[:, 2] * width]))
        return faces

    def close(self):
        if self._mesh is not None:
            with _quiet_native_logs():
                self._mesh.close()
            self._mesh = None
