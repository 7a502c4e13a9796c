"""The llmrec ranking model (preference module + semantic and collaborative branches + fusion layer)."""
