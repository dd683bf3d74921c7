"""Errors for bad input: each names the offending thing (key, file, column, URL) and what to do about it."""


class Vb2pError(Exception):
    """Base class: the command line prints these without a traceback."""


class ConfigError(Vb2pError):
    pass


class ManifestError(Vb2pError):
    pass


class DownloadError(Vb2pError):
    pass


class NoSpaceError(DownloadError):
    """The cache's disk cannot hold a download: trying again does not help until space is freed."""


class TableError(Vb2pError):
    pass


class SelectionError(Vb2pError):
    pass


class NwbError(Vb2pError):
    pass


class OutputError(Vb2pError):
    """A result could not be written (disk full, read-only, no permission): the inputs are not at fault."""


class ShareError(Vb2pError):
    """Publishing derived stores to object storage, or opening them from there, failed."""
