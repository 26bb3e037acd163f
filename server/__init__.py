"""The aiohttp process: app factory, settings, CLI, routes, transports and storage."""

__version__ = "0.1.0"
