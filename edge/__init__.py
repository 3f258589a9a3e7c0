"""facematch edge: the device daemons and the engine they share."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("facematch")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"
