"""The browser console for finance, team leads and admins (``/console``): see routes.py,
team_routes.py, session.py and, for single sign-on, sso.py and oidc.py."""

from fastapi import APIRouter

from gateway.console import routes, sso, team_routes

router = APIRouter()
router.include_router(routes.router)
router.include_router(team_routes.router)
router.include_router(sso.router)

__all__ = ["router"]
