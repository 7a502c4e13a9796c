"""The application: the ``llmrec`` command line and its demo. Nothing imports this package."""
