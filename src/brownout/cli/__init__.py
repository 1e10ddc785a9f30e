"""The ``brownout`` command. Only this package prints for humans or exits the process."""

from ._main import main as main

__all__ = ["main"]
