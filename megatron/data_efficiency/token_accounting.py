"""The one place that counts the tokens a training step consumed.

Curriculum learning shortens sequences and random-LTD lets some layers see only part of
them, so "tokens consumed" is a layer-weighted count (DESIGN section 3):

    tokens = rows * ((S * (L - L_r) + r * L_r) // L)

where ``rows`` is the number of sequences in the global batch (more than the global
batch size under ``seqres``), ``S`` the sequence length the step really used, ``L`` the
number of layers, ``L_r`` the number of layers that drop tokens and ``r`` their kept
length. The LR schedule, the logs and the ``--train-tokens`` stopping rule all read this.
"""
from __future__ import annotations


def tokens_per_step(rows: int, seq_length: int, num_layers: int = 1,
                    dropping_layers: int = 0, kept_length: int | None = None) -> int:
    """Tokens consumed by one optimizer step.

    Args:
        rows: sequences in the global batch after any curriculum reshaping.
        seq_length: tokens per sequence actually fed to the model (after truncation).
        num_layers: transformer layers in the whole model.
        dropping_layers: how many of them run random-LTD this step.
        kept_length: tokens each dropping layer keeps; ``None`` or ``>= seq_length``
            means nothing is dropped.

    Returns:
        The layer-weighted token count: ``rows * ((S*(L - L_r) + r*L_r) // L)``.
    """
    if rows < 0 or seq_length < 0 or num_layers < 1:
        raise ValueError(f"bad token accounting input: rows={rows} seq_length={seq_length} "
                         f"num_layers={num_layers}")
    if not 0 <= dropping_layers <= num_layers:
        raise ValueError(f"dropping_layers={dropping_layers} must be within 0..{num_layers}")
    if kept_length is None or kept_length >= seq_length or dropping_layers == 0:
        return rows * seq_length
    layer_tokens = seq_length * (num_layers - dropping_layers) + kept_length * dropping_layers
    # Rounded per sequence, as Megatron-DeepSpeed's actual_seq_length, then times the rows.
    return rows * (layer_tokens // num_layers)
