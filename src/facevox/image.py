"""Photo stage: any image source → an RGB uint8 array (h, w, 3), upright as the camera saw it; a large
JPEG, if asked, at 1/2 to 1/8 of its size (`PhotoFile.decode`)."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facevox.errors import DamagedImageError, FacevoxError, NotAnImageError, TooManyPixelsError
from facevox.rules import RULES

MAX_PIXELS = RULES["max_pixels"]  # larger images are refused before decoding (decompression bombs)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".heif", ".avif"}

try:  # HEIC/HEIF photos from phones
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - pillow-heif is a dependency, but decoding still works without it
    pass


def load_image(source, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a path, bytes, file object, PIL image or array into an upright RGB uint8 array.
    Error messages name the file (a file object's `name`, if it has one).

    EXIF orientation is applied; greyscale, palette, CMYK, 16-bit and alpha images become RGB
    (alpha composited on white). Raises FacevoxError with a one-line reason for anything else.
    """
    return PhotoFile(source, max_pixels).decode().pixels


def reduction_for(length: float, least: float) -> int:
    """The largest power of two up to 8 (JPEG's DCT scalings) that shrinks `length` to no less than `least`."""
    factor = 1
    while factor < RULES["max_reduction"] and length / (2 * factor) >= least:
        factor *= 2
    return factor


@dataclass
class Photo:
    """A decoded photo: `pixels`, (h, w, 3) uint8 RGB, at 1/`reduction` of the photo's own size in each
    direction (JPEG's DCT scaling: 1, 2, 4 or 8). Pixel column j stands for the photo's columns
    r·j … r·j + r − 1 (rows alike), so its centre is at r·j + (r − 1)/2 in photo pixels."""

    pixels: np.ndarray
    reduction: int = 1

    def to_photo(self) -> np.ndarray:
        """The 2×3 affine matrix from these pixels to the photo's."""
        r = self.reduction
        return np.array([[r, 0.0, (r - 1) / 2], [0.0, r, (r - 1) / 2]], dtype=np.float64)


class PhotoFile:
    """A photo read but not yet decoded (a path, bytes, file object; a PIL image or array is kept as it
    is): its header checked (FacevoxError with a one-line reason), `size` (width, height) upright.
    Each size asked of `decode` is decoded once and kept."""

    def __init__(self, source, max_pixels: int = MAX_PIXELS):
        self.max_pixels, self.name = max_pixels, "image"
        if isinstance(source, (np.ndarray, Image.Image)):
            pixels = _array_to_rgb(source) if isinstance(source, np.ndarray) else _pil_to_rgb(source)
            self.data, self.jpeg, self.size = None, False, (pixels.shape[1], pixels.shape[0])
            self._photos = {1: Photo(pixels)}
            return
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            self.name = path.name
            if not path.exists():
                raise FacevoxError(f"{path}: no such file")
            if path.is_dir():
                raise FacevoxError(f"{path}: is a directory, not an image")
            source = path.read_bytes()
        elif hasattr(source, "read"):
            self.name = Path(str(getattr(source, "name", "") or self.name)).name
            source = source.read()
        if not isinstance(source, (bytes, bytearray, memoryview)):
            raise FacevoxError(f"cannot read an image from {type(source).__name__}")
        if len(source) == 0:
            raise FacevoxError(f"{self.name}: empty file")
        self.data = bytes(source)
        with open_image(self.data, max_pixels, self.name) as image:
            turned = image.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
            self.size = (image.height, image.width) if turned else (image.width, image.height)
            self.jpeg = image.format == "JPEG"
        self._photos: dict[int, Photo] = {}  # by reduction

    def decode(self, reduction: int = 1) -> Photo:
        """The photo's pixels; a JPEG is decoded at 1/reduction of its size (a power of two up to 8:
        far faster for large photos), any other image in full."""
        reduction = reduction if self.jpeg else 1
        if reduction not in self._photos:
            self._photos[reduction] = self._decode(reduction)
        return self._photos[reduction]

    def _decode(self, reduction: int) -> Photo:
        with open_image(self.data, self.max_pixels, self.name) as image:
            width = image.width
            if reduction > 1:
                image.draft(None, (image.width // reduction, image.height // reduction))
            try:
                image.load()
            except (OSError, SyntaxError, ValueError) as error:
                raise DamagedImageError(f"{self.name}: damaged or truncated image ({error})") from None
            return Photo(_pil_to_rgb(image), round(width / image.width))


def open_image(data: bytes, max_pixels: int = MAX_PIXELS, name: str = "image") -> Image.Image:
    """Open an image's header only (nothing decoded yet), refusing what load_image would refuse:
    NotAnImageError, TooManyPixelsError or DamagedImageError, each with a one-line reason."""
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise NotAnImageError(f"{name}: not an image (or a format facevox cannot read)") from None
    except Image.DecompressionBombError:
        raise TooManyPixelsError(f"{name}: too many pixels (a decompression bomb?)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise DamagedImageError(f"{name}: damaged or truncated image ({error})") from None
    if image.width * image.height > max_pixels:
        image.close()
        raise TooManyPixelsError(
            f"{name}: too many pixels, {image.width}×{image.height} (the limit is {max_pixels / 1e6:g} megapixels)",
            (image.width, image.height),
        )
    return image


EXIF_ORIENTATION = 0x0112


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    if image.getexif().get(EXIF_ORIENTATION, 1) != 1:  # (the transpose copies the image even when it need not turn it)
        image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        wide = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or wide.max() > 255 else 255.0
        grey = np.clip(wide / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return np.ascontiguousarray(np.asarray(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8))


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise FacevoxError(f"an image array must be (h, w), (h, w, 3) or (h, w, 4); got {array.shape}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating):
            array = np.clip(array * (255.0 if array.max() <= 1.0 else 1.0) + 0.5, 0, 255)
        elif array.dtype == np.uint16:
            array = array / 257.0 + 0.5
        array = array.astype(np.uint8)
    return np.ascontiguousarray(array[..., :3])


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES
