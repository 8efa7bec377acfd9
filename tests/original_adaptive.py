"""The Adaptive RMU authors' script (RebelsNLU-jaist/llm-unlearning ``baselines/adap_rmu/unlearn.py``), transcribed.

In our own words, step for step. Its ``utils.py`` is WMDP's (same loading, tokenizer, hook and
data reading), so those parts come from :mod:`original_wmdp`. What differs from WMDP's script:

* the run is not bounded by the corpus length;
* each topic's coefficient is ``scale`` times the batch mean of the token-mean per-token norm of the
  UPDATED model's steered-layer output on the batch being trained, at step 0 for topic 0 and step 1
  for topic 1 (after one update), as a Python number; the control vector (drawn with
  ``steering_coeffs`` 1) is multiplied by it in the model's dtype;
* both mean squared errors are taken in the activations' dtype, as in WMDP's script.
"""

from __future__ import annotations

import torch.nn.functional as F

from original_wmdp import (TransformersLegacyAdamW, draw_control_vectors, hooked_output, params_by_position,
                           tokenizer_as_loaded)


def run_adaptive_rmu(updated_model, frozen_model, tokenizer, forget_data, retain_data, *, layer_id, layer_ids,
                     scale, alpha, lr, max_num_batches, seed, steering_coeffs=(1.0, 1.0), param_ids=(6,)):
    """Returns per-step (unlearn_loss, retain_loss), the coefficients and the trained tensors' names."""
    tokenizer_as_loaded(tokenizer)
    updated_model = updated_model.train()
    params = params_by_position(updated_model, layer_ids, param_ids)
    optimizer = TransformersLegacyAdamW(params, lr=lr)
    frozen_module = frozen_model.model.layers[layer_id]
    updated_module = updated_model.model.layers[layer_id]
    control_vectors = draw_control_vectors(updated_model, len(forget_data), steering_coeffs, seed)
    tokenizer.truncation_side = "right"
    coefficients = {0: 1.0, 1: 1.0}
    losses = []
    for idx in range(max_num_batches):
        topic, batch = idx % len(forget_data), idx // len(forget_data)
        max_length = 512 if topic == 0 else 768
        forget_inputs = tokenizer(forget_data[topic][batch], return_tensors="pt", padding=True, truncation=True,
                                  max_length=max_length)
        updated_forget = hooked_output(updated_model, forget_inputs, updated_module, no_grad=False)
        if idx in (0, 1):
            per_sample = updated_forget.norm(dim=-1).mean(dim=1)
            coefficients[idx] = per_sample.mean(dim=0).item() * scale
        target = control_vectors[topic] * coefficients[topic]
        unlearn_loss = F.mse_loss(updated_forget, target.expand_as(updated_forget))

        retain_inputs = tokenizer(retain_data[topic][batch], return_tensors="pt", padding=True, truncation=True,
                                  max_length=512)
        updated_retain = hooked_output(updated_model, retain_inputs, updated_module, no_grad=False)
        frozen_retain = hooked_output(frozen_model, retain_inputs, frozen_module, no_grad=True)
        retain_loss = F.mse_loss(updated_retain, frozen_retain)
        retain_loss = retain_loss * alpha[topic]

        loss = unlearn_loss + retain_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append((unlearn_loss.item(), retain_loss.item()))
    names = {id(p): n for n, p in updated_model.named_parameters()}
    return losses, coefficients, [names[id(p)] for p in params]
