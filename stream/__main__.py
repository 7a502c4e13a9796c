"""``python -m stream``: the worker with settings from the environment (same as ``llmrec worker``)."""

from llmrec.settings import load_settings
from stream.main import run_worker

if __name__ == "__main__":
    run_worker(load_settings())
