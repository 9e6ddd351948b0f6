"""tickwire's feed engine: an AF_XDP socket, an XDP steering program and a C decoder for
NASDAQ ITCH 5.0 over MoldUDP64, driven from Python without Python on the packet path."""
from .config import ConfigError, EngineConfig, Line, PrivilegeError

__all__ = ["ConfigError", "Engine", "EngineConfig", "EngineError", "Line", "PrivilegeError"]


def __getattr__(name):
    # The native module loads on first use, so configuration and the CLI's --help work even
    # where the extension is not built yet.
    if name in ("Engine", "EngineError"):
        from . import engine
        return getattr(engine, name)
    raise AttributeError(name)
