"""What the agent serves: the metrics state and its Prometheus exposition (`metrics`, `promtext`), the hardened
listener (`server`) and the status page (`statuspage`, loaded on the first page request)."""
