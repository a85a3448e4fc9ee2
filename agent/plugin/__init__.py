"""The plugin API: what a check (checks/) or an action (actions/) may import from agent/.

Results and statuses, config field types, units, addresses, calendar specs, redaction, log lines, child
processes and their environment, private output files, a check's JSON state, the store opened read-only,
heartbeat signals, mail. These modules import only each other — never the engine around them, a check or an
action (`make test` enforces it: tests/test_architecture.py and the contracts in pyproject.toml).
"""
