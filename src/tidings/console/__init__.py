"""The operators' console at ``/console``: events, deliveries and their timelines, the
catalog with a live template preview, dead letters, the dev mailbox and live charts.

Server-rendered pages (Jinja2, autoescaped) behind an operator's key; a little script
only for the preview, the charts and live refresh.
"""
