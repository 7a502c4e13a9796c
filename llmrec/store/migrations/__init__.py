"""SQL migrations, applied in file-name order by ``llmrec.store.migrate``."""
