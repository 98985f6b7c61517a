"""An example third-party plugin for agentkernel, installed as its own distribution.

It adds a settings model, two routes, a provider kind and a CLI subcommand; see
``plugin.py`` for the hook implementations the kernel discovers through the
``kernel.plugins`` entry point ``example``.
"""

from __future__ import annotations

__version__ = "0.3.1"
