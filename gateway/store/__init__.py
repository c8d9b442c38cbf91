"""Redis: the client and its connections, key names, scripts, pipelines, the embedded server."""
