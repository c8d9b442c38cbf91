"""The browser console for finance and admins (``/console``): see routes.py, team_routes.py and
session.py."""

from fastapi import APIRouter

from gateway.console import routes, team_routes

router = APIRouter()
router.include_router(routes.router)
router.include_router(team_routes.router)

__all__ = ["router"]
