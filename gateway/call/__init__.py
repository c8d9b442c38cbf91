"""The image call's path, one module per step, each used only by the steps after it.

authenticate -> validate -> reserve -> forward -> settle -> observe. ``routes/images.py`` runs
them top to bottom; :class:`gateway.call.log.CallLog` is the one record of what happened that
they fill in as the call goes.
"""
