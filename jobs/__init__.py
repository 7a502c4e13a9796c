"""Offline jobs: build the item index, train the ranker. Called by the CLI, the demo and deploy/."""
