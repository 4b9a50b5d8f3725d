"""Prometheus metrics of the server (``GET /metrics``): the counters the core and edge bump
(``metrics.counters``) and the gauges read from engine state at scrape time."""
