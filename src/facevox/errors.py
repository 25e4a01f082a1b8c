"""The one error type users see: a bad input, explained in one line."""


class FacevoxError(Exception):
    """An input facevox cannot use (not an image, no face, too large...). str(error) is the reason."""


class NoFaceError(FacevoxError):
    """The photo decoded, but no face was found in it."""
