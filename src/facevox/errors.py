"""The one error type users see: a bad input, explained in one line."""


class FacevoxError(Exception):
    """An input facevox cannot use (not an image, no face, too large...). str(error) is the reason."""


class NoFaceError(FacevoxError):
    """The photo decoded, but no face was found in it."""


class NotAnImageError(FacevoxError):
    """The bytes are no image format facevox can read."""


class TooManyPixelsError(FacevoxError):
    """The image is larger than the pixel limit (size: (width, height), or None for a decompression bomb)."""

    def __init__(self, message: str, size: tuple[int, int] | None = None):
        super().__init__(message)
        self.size = size


class DamagedImageError(FacevoxError):
    """The image's data is damaged or cut short."""
