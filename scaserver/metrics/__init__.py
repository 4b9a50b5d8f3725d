"""Prometheus metrics of the server (``GET /metrics``): the counters and histograms the core
and edge bump (``metrics.counters``) and the gauges read from engine state at scrape time
(``metrics.collectors``)."""

#: The prefix of every family the server exports (``scaserver_*``).
NAMESPACE = "scaserver"
