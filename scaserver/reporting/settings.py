"""``[reporting]`` (reporting.md), structured straight from the table."""

from __future__ import annotations

import attrs


@attrs.frozen
class ReportingSettings:
    """``[reporting]`` (reporting.md): call and appearance history for SQL reports.

    ``enabled`` false writes no history; ``retention_days`` is how long rows are kept
    (purged once a day); ``sample_interval`` the seconds between per-line busy samples.
    """

    enabled: bool = True
    retention_days: int = 90
    sample_interval: float = 60.0
