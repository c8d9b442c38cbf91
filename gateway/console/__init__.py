"""The browser console for finance and admins (``/console``): see routes.py and session.py."""

from gateway.console.routes import router

__all__ = ["router"]
