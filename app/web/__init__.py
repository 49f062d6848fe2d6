"""The status page's files (HTML, script, style), served by :mod:`app.api.status`."""
