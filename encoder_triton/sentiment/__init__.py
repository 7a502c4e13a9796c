"""Learned review sentiment: a small head on frozen encoder embeddings, evaluated against VADER and the
anchor scorer on a held-out split of the MAL reviews (see ``train.train_sentiment``)."""
