"""Start tritonserver (and the gateway) on this machine: `python -m launcher triton|serve`."""

from launcher.installation import TritonInstallation, TritonNotFoundError, find_installation
from launcher.server import TritonServer, TritonStartError
from launcher.settings import TritonSettings

__all__ = [
    "TritonInstallation",
    "TritonNotFoundError",
    "TritonServer",
    "TritonSettings",
    "TritonStartError",
    "find_installation",
]
