"""The seed papers' experiments; each returns a table and figures for a report."""
