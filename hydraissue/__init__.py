"""HydraIssue: the issue intake service of the Hydra ecosystem."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hydraissue")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
