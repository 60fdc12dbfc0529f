"""Attention for CPUs without AMX: two batched matrix products around a float32 softmax.

PyTorch's fused CPU kernel for scaled_dot_product_attention (2.13) works through 32 queries of one (sequence, head)
at a time, and in bfloat16 without AMX each of its small matrix products costs more in overhead than in arithmetic.
An NLI teacher's pairs are short (about 70 tokens for AG News) and its heads narrow (32 dimensions in MiniLM), so
one batched product over every (sequence, head) does the same work in far fewer calls. The measurements below are
from 2 cores of an AMD EPYC with AVX-512 BF16, with freed memory kept (`zsdistill.allocator`). There a compiled
attention call for 32 sequences of 72 tokens and 12 heads took 3.2 ms this way, against 7.1 to 7.7 ms in the fused
kernel.
"""

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, bidirectional_mask_function, eager_mask

from zsdistill.models import cpu_has

# The name under which transformers' attention and mask registries hold this implementation.
MATMUL_ATTENTION = "zsdistill_matmul"


def matmul_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Compute softmax(query · keyᵀ · scaling + mask) · value, shaped (batch, queries, heads, head size).

    The inputs are shaped (batch, heads, positions, head size), as transformers passes them. The mask is additive, or
    boolean with True where a query may attend.
    """
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    # The scores stay in float32, as in the fused kernel, also under autocast. Rounding them to bfloat16 made the
    # attention output's error several times larger in a test on random inputs.
    with torch.autocast(query.device.type, enabled=False):
        scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * scaling
        if attention_mask is not None and attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(torch.float32).min)
        elif attention_mask is not None:
            scores = scores + attention_mask
        probabilities = scores.softmax(dim=-1)
    probabilities = torch.nn.functional.dropout(probabilities, p=dropout, training=module.training)
    output = torch.matmul(probabilities.to(value.dtype), value)
    return output.transpose(1, 2).contiguous(), None


def padding_bias(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int = 0,
    kv_offset: int = 0,
    mask_function=bidirectional_mask_function,
    attention_mask: torch.Tensor | None = None,
    **kwargs,
) -> torch.Tensor | None:
    """Build the additive float32 mask for matmul_attention, or None when every position may attend everywhere.

    A bidirectional mask over padding alone becomes one row per sequence, shaped (batch, 1, 1, keys), which the
    compiled softmax reads once per row. Any other mask is transformers' eager mask, shaped (batch, 1, queries, keys).
    """
    if mask_function is bidirectional_mask_function and kv_offset == 0:
        if attention_mask is None:
            return None
        if attention_mask.dim() == 2 and attention_mask.shape[-1] == kv_length:
            bias = torch.zeros(attention_mask.shape, dtype=torch.float32, device=attention_mask.device)
            bias = bias.masked_fill(~attention_mask.bool(), torch.finfo(torch.float32).min)
            return bias[:, None, None, :]
    kwargs["dtype"] = torch.float32
    return eager_mask(
        batch_size=batch_size,
        q_length=q_length,
        kv_length=kv_length,
        q_offset=q_offset,
        kv_offset=kv_offset,
        mask_function=mask_function,
        attention_mask=attention_mask,
        **kwargs,
    )


def prefers_matmul_attention(device: torch.device, dtype: torch.dtype, compiled: bool) -> bool:
    """Return whether matmul_attention should replace the fused kernel for a teacher on `device` in `dtype`.

    It does for a compiled teacher in bfloat16 or float16 on a CPU without AMX. On the AMD EPYC above, the whole
    compiled bfloat16 pass ran 1% to 4% faster with it in paired runs, and 2% more without rounding the padded
    length. Uncompiled, its separate steps made the pass 16% slower, and in float32 the fused kernel was as fast.
    NOTE: on CPUs with AMX, the fused kernel runs its products on the matrix units, and the two were not compared
    there. Without torch's AMX check, every CPU counts as one without AMX.
    """
    if device.type != "cpu" or not compiled or dtype not in (torch.bfloat16, torch.float16):
        return False
    return not cpu_has("_is_amx_tile_supported")


def use_matmul_attention(model: torch.nn.Module) -> bool:
    """Switch an encoder's self-attention to matmul_attention; return whether the model now uses it.

    Only models that take their attention from transformers' registry, and now use SDPA or eager attention, are
    switched. Decoders are left as they are, because their masks are causal.
    """
    config = model.config
    if config._attn_implementation == MATMUL_ATTENTION:
        return True
    if config._attn_implementation not in ("sdpa", "eager") or config.is_decoder:
        return False
    if not getattr(model, "_supports_attention_backend", False) or not model._can_set_attn_implementation():
        return False
    AttentionInterface.register(MATMUL_ATTENTION, matmul_attention)
    AttentionMaskInterface.register(MATMUL_ATTENTION, padding_bias)
    model.set_attn_implementation(MATMUL_ATTENTION)
    return config._attn_implementation == MATMUL_ATTENTION
