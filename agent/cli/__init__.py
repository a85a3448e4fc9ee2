"""`maint-agent` on the command line: `main` builds the parser and imports each command module by name
(`log`, `report`, `actions`, `fleet`, `drift`, `maintenance`, `ping`, `notifications`); what they share is in
`common`; views of a check, the config and the status are in `checkview`, `configview`, `statusview`.
Nothing below imports this package."""
