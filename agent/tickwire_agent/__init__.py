"""tickwire node agent: plan -> tuned host -> supervised AF_XDP engine -> metrics and status."""
