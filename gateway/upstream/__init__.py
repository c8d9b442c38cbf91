"""The upstream: the client that calls it and the HTTP/1.1 transport under it."""
