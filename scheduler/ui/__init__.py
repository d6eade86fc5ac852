"""The web UI of `flow server` and `flow ui`: server-rendered pages over the run database."""
