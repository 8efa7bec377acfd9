"""A plain, obviously-correct RMU / Adaptive RMU, written the way the public reference code works.

Two full model copies (frozen and updated), each run through ALL layers and the LM head, the layer-l
output read with a forward hook; all parameters of the updated copy keep requires_grad; AdamW with
weight decay 0 and eps 1e-6. Deliberately independent of the rmu engine: it shares no code with it
except the tokenizer conventions it must match. Used by the equivalence tests (tests/test_engine.py)
and the benchmark (benchmarks/bench_engine.py).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F


def decoder_layers(model):
    """The decoder layers, by the attribute paths of the architectures the tests use."""
    for path in ("model.layers", "transformer.h", "gpt_neox.layers"):
        module = model
        try:
            for attribute in path.split("."):
                module = getattr(module, attribute)
            return module
        except AttributeError:
            continue
    raise ValueError(f"unknown architecture {type(model).__name__}")


def forward_with_cache(model, inputs, module, no_grad=True):
    """Full forward pass of ``model``; returns what ``module`` output (its hidden state)."""
    cache = []

    def hook(module, inputs, output):
        cache.append(output[0] if isinstance(output, tuple) else output)

    handle = module.register_forward_hook(hook)
    if no_grad:
        with torch.no_grad():
            model(**inputs)
    else:
        model(**inputs)
    handle.remove()
    return cache[0]


def mse(prediction, target, mask=None):
    target = target.expand_as(prediction)
    if mask is None:
        return F.mse_loss(prediction, target)
    m = mask.unsqueeze(-1).float()
    return ((prediction - target) ** 2 * m).sum() / (m.sum() * prediction.shape[-1])


def loss_mask(inputs, mask_padding, mask_first_token):
    """Positions in the losses: all, real tokens only, and/or all but each row's first real token."""
    if not (mask_padding or mask_first_token):
        return None
    attention = inputs["attention_mask"]
    mask = attention.clone() if mask_padding else torch.ones_like(attention)
    if mask_first_token:
        first_real = (attention.cumsum(1) == 1) & (attention == 1)
        mask = mask * (~first_real)
    return mask


def reference_unlearn(model, tokenizer, forget_batches, retain_batches, control_vectors, trained_names, *,
                      layer, steps, method="rmu", rule="first-batch", steering_coeff=(6.5,), beta=(5.0,),
                      alpha=(1200.0,), max_len=(512,), retain_max_len=512, lr=5e-5, mask_padding=False,
                      mask_first_token=False, noise=0.0, noise_seed=0, on_step=None):
    """Returns (per-step [(forget_loss, retain_loss)], updated model).

    forget_batches[t][b] / retain_batches[t][b]: lists of texts; control_vectors[t]: unit vectors.
    """
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "right"
    frozen_model = model.eval()  # never trained, so the caller's model serves as the frozen copy
    updated_model = copy.deepcopy(model).eval()
    frozen_module = decoder_layers(frozen_model)[layer]
    updated_module = decoder_layers(updated_model)[layer]
    named = dict(updated_model.named_parameters())
    optimizer = torch.optim.AdamW([named[n] for n in trained_names], lr=lr, weight_decay=0.0, eps=1e-6)
    generator = torch.Generator().manual_seed(noise_seed)
    topics = len(forget_batches)
    first_batch_coeff = {}
    losses = []
    for step in range(steps):
        t, b = step % topics, step // topics
        forget_inputs = tokenizer(forget_batches[t][b], return_tensors="pt", padding=True, truncation=True,
                                  max_length=max_len[t])
        forget_mask = loss_mask(forget_inputs, mask_padding, mask_first_token)
        updated_forget = forward_with_cache(updated_model, forget_inputs, updated_module, no_grad=False)
        if method == "rmu":
            coeff = torch.full((updated_forget.shape[0],), float(steering_coeff[t]))
        else:
            if rule == "first-batch" and t not in first_batch_coeff:
                first = tokenizer(forget_batches[t][0], return_tensors="pt", padding=True, truncation=True,
                                  max_length=max_len[t])
                h = forward_with_cache(frozen_model, first, frozen_module)
                per_token = h.norm(dim=-1)  # (batch, tokens)
                m = loss_mask(first, mask_padding, mask_first_token)
                if m is not None:
                    m = m.float()
                    per_sample = (per_token * m).sum(1) / m.sum(1)
                else:
                    per_sample = per_token.mean(1)
                first_batch_coeff[t] = beta[t] * per_sample.mean().item()
            if rule == "first-batch":
                coeff = torch.full((updated_forget.shape[0],), first_batch_coeff[t])
            else:
                h = forward_with_cache(frozen_model, forget_inputs, frozen_module)
                if forget_mask is not None:
                    m = forget_mask.float().unsqueeze(-1)
                    averaged = (h * m).sum(1) / m.sum(1)
                else:
                    averaged = h.mean(1)
                coeff = beta[t] * averaged.norm(dim=-1)
        control = coeff[:, None, None] * control_vectors[t]
        forget_loss = mse(updated_forget, control, forget_mask)

        retain_inputs = tokenizer(retain_batches[t][b], return_tensors="pt", padding=True, truncation=True,
                                  max_length=retain_max_len)
        retain_mask = loss_mask(retain_inputs, mask_padding, mask_first_token)
        updated_retain = forward_with_cache(updated_model, retain_inputs, updated_module, no_grad=False)
        frozen_retain = forward_with_cache(frozen_model, retain_inputs, frozen_module, no_grad=True)
        if noise > 0:
            frozen_retain = frozen_retain + noise * torch.randn(frozen_retain.shape, generator=generator)
        retain_loss = alpha[t] * mse(updated_retain, frozen_retain, retain_mask)

        loss = forget_loss + retain_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append((forget_loss.item(), retain_loss.item()))
        if on_step is not None:
            on_step(step)
    return losses, updated_model
