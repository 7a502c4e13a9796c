"""Generated gRPC code for llmrec.v1: run `make proto`, never edit by hand."""
