"""Budget alerts: delivery of what settle.lua queued in each team's outbox, to a webhook.

``outbox.py`` is the Redis side (the index of teams with alerts, due alerts, removal, retry),
``message.py`` the body, its sentence and its signature (pure functions), ``webhook.py`` the one
HTTP POST, ``leader.py`` the lock that makes one process the sender, and ``sender.py`` the loop
that ties them together. No module here imports another package's request path.
"""
