"""The browser console for finance, team leads and admins (``/console``): see routes.py,
session.py and, for single sign-on, sso.py and oidc.py."""

from gateway.console.routes import router
from gateway.console.sso import router as sso_router

__all__ = ["router", "sso_router"]
