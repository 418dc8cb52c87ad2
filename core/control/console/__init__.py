"""The run console: server-side HTML pages, their assets and charts, a local server."""
