"""The config: every model of agent.yaml (the core sections in `schema`, each optional section in its module:
`reports`, `checklists`, `archive`, `web`; check and action options live with their types), reading YAML with
line numbers (`yamlsrc`), includes, triggers, loading with located errors (`load`) and the file-safety audit
(`exposure`). Below the store, reports, HTTP and daemon that read a loaded config; never imports them."""
