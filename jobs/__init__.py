"""Offline jobs: build the item index, train the ranker, tune and evaluate, write the event schemas. Called
by the CLI, the demo and deploy/."""
