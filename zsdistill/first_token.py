"""Run a classifier's last encoder layer on the first token only, which is all its classification head reads.

BERT, RoBERTa, XLM-RoBERTa, CamemBERT and ELECTRA classifiers compute their logits from the last layer's output at
the first position alone. Every other position of that layer is computed and then discarded: its query, attention
output, residual, layer norm and feed-forward network. Running the last layer on the first token's query, against the
keys and values of every token, gives the same logits for less work. For a 6-layer teacher that is about a seventh of
the matrix-product FLOPs, and for a 24-layer one about a thirtieth.
"""

import functools
import sys
from collections.abc import Callable

import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

# Sequence classifiers whose head reads only the last hidden state at position 0 (transformers 5.25).
FIRST_TOKEN_HEADS = (
    "BertForSequenceClassification",
    "CamembertForSequenceClassification",
    "ElectraForSequenceClassification",
    "RobertaForSequenceClassification",
    "XLMRobertaForSequenceClassification",
)
# The attention implementations that take a mask of shape (batch, 1, queries, keys) or none.
_SUPPORTED_ATTENTION = ("eager", "sdpa")


def _first_token_layer_forward(
    layer: torch.nn.Module,
    eager_attention: Callable,
    hidden_states: torch.Tensor,
    attention_mask=None,
    *args,
    **kwargs,
) -> torch.Tensor:
    """Compute a BERT-style encoder layer's output at position 0 only, shape (batch, 1, hidden size)."""
    self_attention = layer.attention.self
    first = hidden_states[:, :1]
    batch_size, length = hidden_states.shape[:2]
    head_size = self_attention.attention_head_size
    query = self_attention.query(first).view(batch_size, 1, -1, head_size).transpose(1, 2)
    key = self_attention.key(hidden_states).view(batch_size, length, -1, head_size).transpose(1, 2)
    value = self_attention.value(hidden_states).view(batch_size, length, -1, head_size).transpose(1, 2)
    # A mask of one row per query keeps only the first query's row. A mask of one row per sequence, or none, stays.
    if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[2] > 1:
        attention_mask = attention_mask[:, :, :1, :]

    # Looked up at every call, as the model's own layers do, so that a later change of implementation applies.
    attention = ALL_ATTENTION_FUNCTIONS.get_interface(self_attention.config._attn_implementation, eager_attention)
    output, _ = attention(
        self_attention, query, key, value, attention_mask, dropout=0.0, scaling=self_attention.scaling
    )
    attention_output = layer.attention.output(output.reshape(batch_size, 1, -1), first)
    return layer.output(layer.intermediate(attention_output), attention_output)


def run_last_layer_on_first_token(model: torch.nn.Module) -> bool:
    """Make `model`'s last encoder layer compute position 0 only; return whether the model was changed.

    The model must be in evaluation mode, because the changed layer applies no dropout. Models with another head,
    a decoder, or attention other than eager and SDPA are left as they are. Calling it twice changes nothing more.
    """
    if type(model).__name__ not in FIRST_TOKEN_HEADS or model.training:
        return False
    config = model.config
    if config.is_decoder or getattr(config, "add_cross_attention", False):
        return False
    if getattr(config, "_attn_implementation", None) not in _SUPPORTED_ATTENTION:
        return False
    layers = getattr(getattr(model.base_model, "encoder", None), "layer", None)
    if not isinstance(layers, torch.nn.ModuleList) or len(layers) == 0:
        return False
    last = layers[-1]
    if getattr(last, "runs_on_first_token", False):
        return True
    attention = getattr(last, "attention", None)
    self_attention = getattr(attention, "self", None)
    parts = (self_attention, getattr(attention, "output", None), getattr(last, "intermediate", None))
    if any(part is None for part in parts) or getattr(last, "output", None) is None:
        return False
    if not all(hasattr(self_attention, name) for name in ("query", "key", "value", "scaling", "attention_head_size")):
        return False

    # Eager attention is defined in each model's own module rather than registered with transformers.
    eager_attention = getattr(sys.modules[type(self_attention).__module__], "eager_attention_forward", None)
    if eager_attention is None:
        return False

    # The instance's forward is replaced, not the module, so the weights keep their names and device placement.
    last.forward = functools.partial(_first_token_layer_forward, last, eager_attention)
    last.runs_on_first_token = True
    return True
