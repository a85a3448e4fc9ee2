"""The store: the SQLite writer the daemon owns (`writer`), read-only queries for the CLI and pages
(`history`), the daemon's liveness record (`liveness`) and the daily S3 archive of the history (`archive`)."""
