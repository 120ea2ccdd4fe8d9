"""Exceptions with messages that name the offending thing and how to fix it."""


class PixelrobustError(Exception):
    """Base class: every error we raise on bad input derives from it."""


class ConfigError(PixelrobustError, ValueError):
    """A config value is missing, malformed or inconsistent."""


class DataError(PixelrobustError):
    """A dataset file or folder is missing, corrupt or has the wrong layout."""


class ModelError(PixelrobustError):
    """A weights file is missing, corrupt or does not fit the architecture."""


class ChecksumError(PixelrobustError):
    """A downloaded or mirrored file does not have the expected checksum."""
