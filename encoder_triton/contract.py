"""The one definition of the encoder's Triton interface: model name, tensor names, dtypes and shapes.

``model_repository/llmrec_encoder/config.pbtxt`` must agree with this module (a unit test parses the
config and compares). This module imports nothing from the rest of the project because it is also
imported inside the Triton Python backend, whose environment holds only the encoder's dependencies.

Shapes exclude the batch dimension. Every request carries ``[b, 1]`` texts (b >= 1, Triton's batch
dimension): strings are variable-length *elements* of a fixed ``[1]`` shape, so requests with
texts of different lengths have the same shape and dynamic batching merges them without
``allow_ragged_batch``. The responses are ``EMBEDDING [b, dim]`` and ``SENTIMENT [b, 1]``.
"""

from __future__ import annotations

from typing import Final

# Must equal ``llmrec.settings.TritonSettings.model_name`` and the folder name in the repository.
DEFAULT_MODEL_NAME: Final = "llmrec_encoder"
MODEL_VERSION: Final = "1"

INPUT_TEXT: Final = "TEXT"
INPUT_TEXT_DTYPE: Final = "BYTES"  # UTF-8 encoded text, one element per review
INPUT_TEXT_DIMS: Final = (1,)

OUTPUT_EMBEDDING: Final = "EMBEDDING"
OUTPUT_EMBEDDING_DTYPE: Final = "FP32"
# The backbone's hidden size (384 for MiniLM-L6). Declared -1 so that another Hugging Face encoder
# (a later domain-adapted model) can be dropped into the repository without touching the config.
OUTPUT_EMBEDDING_DIMS: Final = (-1,)

OUTPUT_SENTIMENT: Final = "SENTIMENT"
OUTPUT_SENTIMENT_DTYPE: Final = "FP32"
OUTPUT_SENTIMENT_DIMS: Final = (1,)  # a score in [0, 1]: 0 negative, 1 positive

# Triton merges queued requests up to this many texts per execution.
MAX_BATCH_SIZE: Final = 64

# Reason codes carried in the error message of a rejected request ("<code>: <detail>"), so clients and
# the dead-letter topic can match on them without parsing prose.
REJECT_EMPTY_TEXT: Final = "empty_text"
REJECT_INVALID_UTF8: Final = "invalid_utf8"
REJECT_BAD_SHAPE: Final = "bad_shape"
