"""``llmrec train-encoder``: domain adaptation (MLM), SimCSE-style contrastive fine-tuning and the sentiment
head on top, over any Hugging Face encoder; ``llmrec export-encoder`` puts a run into the Triton repository.

Modules: ``presets`` (hyperparameters), ``corpus`` (texts, pairs and splits), ``backbones`` (base models
and the from-scratch RoBERTa with its BPE tokenizer), ``mlm``, ``contrastive``, ``retrieval`` (the
item-level measure), ``run`` (the pipeline and its run folder), ``plots``, ``export``, ``report``.
"""
