"""Real-time chat service: Socket.IO and REST on aiohttp, PostgreSQL history, Redis fan-out."""

__version__ = "0.1.0"
