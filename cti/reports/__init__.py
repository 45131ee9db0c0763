"""Reports: queue_log and CDR import, metrics with written definitions, piece-rate statements."""
