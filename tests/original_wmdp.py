"""WMDP's RMU script (centerforaisafety/wmdp ``rmu/unlearn.py`` + ``rmu/utils.py``), transcribed.

Written in our own words from a reading of the original, step for step, so the tests can run the
published arithmetic on tiny models and compare ``rmu unlearn --recipe wmdp-rmu`` with it. Nothing
here comes from the rmu package: two full model copies run through every layer and the LM head,
the steered layer's output is read with a forward hook, every parameter of the updated copy keeps
its gradient, the optimizer is transformers' legacy AdamW written out below, the updated model is
put in train() mode, and the corpora are read as ``get_data`` reads them.

What stands in for the parts a test cannot run: the model and tokenizer come from the caller
(already in the dtype under test) instead of ``from_pretrained(torch_dtype="auto")``; the
wikitext rows come from a JSON-lines file of {"text": row} instead of ``load_dataset``; the seed is
set just before the control vectors are drawn (the original sets it before loading the models,
which draws nothing from torch's generator).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F


class TransformersLegacyAdamW(torch.optim.Optimizer):
    """transformers' AdamW before its removal, with the defaults the script uses.

    Per parameter: both moments are zeros shaped and typed like the parameter; each step updates
    them in place, the denominator is the root of the raw second moment plus eps, the bias
    corrections scale the step size, and the parameter is moved in its own dtype.
    """

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, correct_bias=True):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      correct_bias=correct_bias))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p.data)
                    state["exp_avg_sq"] = torch.zeros_like(p.data)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                b1, b2 = group["betas"]
                state["step"] += 1
                m.mul_(b1).add_(p.grad, alpha=1.0 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1.0 - b2)
                denominator = v.sqrt().add_(group["eps"])
                size = group["lr"]
                if group["correct_bias"]:
                    size = size * math.sqrt(1.0 - b2 ** state["step"]) / (1.0 - b1 ** state["step"])
                p.addcdiv_(m, denominator, value=-size)
                if group["weight_decay"] > 0.0:
                    p.add_(p, alpha=-group["lr"] * group["weight_decay"])


# ----- utils.py -----

def hooked_output(model, inputs, module, no_grad=True):
    """Run the whole model; return what ``module`` produced (its first output when a tuple)."""
    seen = []

    def keep(mod, args, output):
        seen.append(output[0] if isinstance(output, tuple) else output)

    handle = module.register_forward_hook(keep)
    if no_grad:
        with torch.no_grad():
            model(**inputs)
    else:
        model(**inputs)
    handle.remove()
    return seen[0]


def params_by_position(model, layer_ids, param_ids):
    """The i-th tensor of each listed decoder layer's parameters(), for i in param_ids."""
    chosen = []
    for layer_id in layer_ids:
        for position, tensor in enumerate(model.model.layers[layer_id].parameters()):
            if position in param_ids:
                chosen.append(tensor)
    return chosen


def tokenizer_as_loaded(tokenizer):
    """load_model's tokenizer settings: pad (and mask/sep/cls) ids forced to EOS, left padding."""
    tokenizer.pad_token_id = tokenizer.eos_token_id
    tokenizer.padding_side = "left"
    return tokenizer


def corpus_batches(path, min_len, batch_size, wikitext_rows=False):
    """get_data's reading of one corpus, grouped into consecutive batches.

    wikitext: every dataset row's text (here: the rows of a JSON-lines stand-in). Other corpora:
    every line of the file; its "text" field only when the corpus name has "bio-forget-corpus" in
    it, else the raw line itself. A text is kept when longer than min_len characters.
    """
    texts = []
    with open(path) as handle:
        for line in handle:
            if wikitext_rows:
                text = json.loads(line)["text"]
            elif "bio-forget-corpus" in Path(path).stem:
                text = json.loads(line)["text"]
            else:
                text = line
            if len(text) > min_len:
                texts.append(str(text))
    return [texts[i:i + batch_size] for i in range(0, len(texts), batch_size)]


def draw_control_vectors(model, topics, coefficients, seed):
    """After seeding: per topic torch.rand(1, 1, d) in the model's dtype and device, / norm, * c."""
    torch.manual_seed(seed)
    vectors = []
    for index in range(topics):
        draw = torch.rand(1, 1, model.config.hidden_size, dtype=model.dtype, device=model.device)
        vectors.append(draw / torch.norm(draw) * coefficients[index])
    return vectors


# ----- unlearn.py: run_rmu -----

def run_rmu(updated_model, frozen_model, tokenizer, forget_data, retain_data, *, layer_id, layer_ids,
            steering_coeffs, alpha, lr, max_num_batches, seed, param_ids=(6,), nu=None):
    """Returns per-step (unlearn_loss, retain_loss), the trained tensors' names and the control vectors.

    ``nu``: llmu-robustness's RMU (random noise augmentation), which is this script plus
    ``randn_like(frozen retain activation) * nu`` added to the retain target, without the step bound.
    """
    tokenizer_as_loaded(tokenizer)
    updated_model = updated_model.train()
    params = params_by_position(updated_model, layer_ids, param_ids)
    optimizer = TransformersLegacyAdamW(params, lr=lr)
    frozen_module = frozen_model.model.layers[layer_id]
    updated_module = updated_model.model.layers[layer_id]
    control_vectors = draw_control_vectors(updated_model, len(forget_data), steering_coeffs, seed)
    steps = min(max_num_batches, min(len(f) for f in forget_data), min(len(r) for r in retain_data))
    if nu is not None:
        steps = max_num_batches
    tokenizer.truncation_side = "right"
    losses = []
    for idx in range(steps):
        topic, batch = idx % len(forget_data), idx // len(forget_data)
        max_length = 512 if topic == 0 else 768
        forget_inputs = tokenizer(forget_data[topic][batch], return_tensors="pt", padding=True, truncation=True,
                                  max_length=max_length)
        updated_forget = hooked_output(updated_model, forget_inputs, updated_module, no_grad=False)
        unlearn_loss = F.mse_loss(updated_forget, control_vectors[topic].expand_as(updated_forget))

        retain_inputs = tokenizer(retain_data[topic][batch], return_tensors="pt", padding=True, truncation=True,
                                  max_length=512)
        updated_retain = hooked_output(updated_model, retain_inputs, updated_module, no_grad=False)
        frozen_retain = hooked_output(frozen_model, retain_inputs, frozen_module, no_grad=True)
        if nu is not None:
            frozen_retain = frozen_retain + torch.randn_like(frozen_retain) * nu
        retain_loss = F.mse_loss(updated_retain, frozen_retain)
        retain_loss = retain_loss * alpha[topic]

        loss = unlearn_loss + retain_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append((unlearn_loss.item(), retain_loss.item()))
    names = {id(p): n for n, p in updated_model.named_parameters()}
    return losses, [names[id(p)] for p in params], control_vectors
