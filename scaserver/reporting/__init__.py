"""SQL reporting: history rows from bus facts, reports Q1-Q8, output, retention (reporting.md)."""
