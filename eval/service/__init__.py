"""Serving: export folders and their layout, runtimes, export with action parity, the HTTP server, its
client (a remote Agent), the load test and the service-requirements check."""
