"""BERT pretraining entry point (not in this release)."""
from __future__ import annotations

import sys

if __name__ == "__main__":
    print("pretrain_bert.py: BERT pretraining comes in a later release; "
          "use pretrain_gpt.py for GPT pretraining.", file=sys.stderr)
    sys.exit(2)
