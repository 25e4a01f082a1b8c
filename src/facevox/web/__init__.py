"""The web page and HTTP API of facevox (`facevox serve`)."""

from facevox.web.app import create_app

__all__ = ["create_app"]
