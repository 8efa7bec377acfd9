"""Why the scale rule does not move Gemma 3 270M's forget states: the measurements of docs/tuning.md
section 4 ("Why Gemma 3 270M does not forget"), on the first forget/retain documents of a demo topic.

    OMP_NUM_THREADS=1 python benchmarks/massive_activation_probe.py profile --model gemma3-270m --topic animals
    OMP_NUM_THREADS=1 python benchmarks/massive_activation_probe.py reach --model gemma3-270m --topic animals
    OMP_NUM_THREADS=1 python benchmarks/massive_activation_probe.py optimise --model gemma3-270m --topic animals \\
        --trial rule:mlp.down_proj.weight:1.2e-4:dense:0:all

* ``profile``: per decoder layer, the mean per-token norm N of its output on 8 forget documents (first
  token and pads left out), its massive dimensions (``rmu.scale.massive_activations``), their share of
  |h|^2 and the norm without them.
* ``reach`` (models whose layers normalise each sub-layer's output, Gemma 2/3: ``post_feedforward_layernorm``,
  ``post_attention_layernorm``): such a sub-layer adds (1 + w) * v with |v| = sqrt(d) whatever the
  weights before the norm are, so the most it can add along the control vector u is
  sqrt(d) |(1 + w) * u|. Printed per layer with the target's length c = 2N.
* ``optimise``: a reachability test without the engine. Layers l-2..l (default 5..7) are trained with
  torch's AdamW on ONE forget batch of 4 documents (and, with alpha > 0, one retain batch) for 40
  steps; printed: how far the layer-l states got to the target, in the massive dimensions and in the
  rest. ``--trial label:params:lr:target:alpha:dims``; params = globs inside a layer (comma-separated);
  target ``dense`` = c u with c = ratio x N and the engine's u (seed 42), ``keep`` = the massive
  dimensions kept at their mean, the rest ratio x (norm without them) along u's other entries;
  dims ``all`` (the engine's losses) or ``rest`` (both losses on the non-massive dimensions only).
* ``keep-vector --output FILE``: a control_vectors.safetensors for ``rmu unlearn --method rmu
  --control-vectors FILE --steering-coeff C`` whose target C u keeps the layer's massive dimensions at
  their mean over 16 forget documents and points the rest along the engine's u (its other entries) with
  length 2 x the norm without them; prints C. (The "keeps the massive dimensions" rows of docs/tuning.md.)
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math

import torch

from rmu import rules
from rmu.demo.model import DEMO_MODELS, model_path
from rmu.demo.topics import TOPICS, demo_topic, write_topic
from rmu.loading import load_model
from rmu.scale import massive_activations

SEED, MAX_LEN = 42, 128


KEEP_FIRST_TOKEN = False  # --keep-first-token: count each row's first token (as runs without --mask-first-token)


def encode(tokenizer, path, count):
    """The first ``count`` documents of a jsonl corpus, and the mask of their real tokens but the first."""
    docs = [json.loads(line)["text"] for line in open(path, encoding="utf-8")][:count]
    batch = tokenizer(docs, return_tensors="pt", padding=True, truncation=True, max_length=MAX_LEN)
    real = batch.attention_mask.bool()
    if not KEEP_FIRST_TOKEN:
        real[torch.arange(real.shape[0]), real.int().argmax(1)] = False
    return batch, real


def profile(model, tokenizer, paths):
    batch, real = encode(tokenizer, paths["forget_corpus"], 8)
    with torch.no_grad():
        hidden = model(**batch, output_hidden_states=True, use_cache=False).hidden_states
    for index in range(1, len(hidden) - 1):  # the last entry is after the final norm
        states = hidden[index].float()
        massive = massive_activations(states, real)
        print(json.dumps({"layer": index - 1, "N": round(float(states[real].norm(dim=-1).mean()), 1),
                          "massive_dims": massive.dims, "massive_share": round(massive.share, 4),
                          "norm_without": round(massive.other_norm, 1)}))


def reach(model, tokenizer, paths, topic):
    batch, real = encode(tokenizer, paths["forget_corpus"], 8)
    with torch.no_grad():
        hidden = model(**batch, output_hidden_states=True, use_cache=False).hidden_states
    width = hidden[0].shape[-1]
    u = rules.random_control_vectors([topic], width, SEED)[topic]
    for index, layer in enumerate(model.model.layers[:-1]):
        gain_mlp = 1 + layer.post_feedforward_layernorm.weight.detach().float()
        gain_attn = 1 + layer.post_attention_layernorm.weight.detach().float()
        states = hidden[index + 1].float()[real]
        norm = float(states.norm(dim=-1).mean())
        print(json.dumps({
            "layer": index, "N": round(norm, 1), "c=2N": round(2 * norm), "h.u": round(float((states @ u).mean()), 1),
            "mlp_reach_along_u": round(math.sqrt(width) * float((gain_mlp * u).norm())),
            "attn_reach_along_u": round(math.sqrt(width) * float((gain_attn * u).norm())),
            "mlp_gain_median": round(float(gain_mlp.abs().median()), 1), "mlp_gain_max": round(float(gain_mlp.abs().max())),
        }))


class LayerSlice:
    """Runs layers first..last of the model on captured inputs (no engine), for the optimise probe."""

    def __init__(self, model, first, last):
        self.model, self.layers = model, list(range(first, last + 1))

    def capture(self, batch):
        captured = {}
        last = self.layers[-1]

        def hook_for(index):
            def hook(module, args, kwargs):
                captured[index] = (args, kwargs)
                if index == last:
                    raise StopIteration  # layers after l are not needed
            return hook

        hooks = [self.model.model.layers[i].register_forward_pre_hook(hook_for(i), with_kwargs=True)
                 for i in self.layers]
        try:
            with torch.no_grad():
                self.model(**batch, use_cache=False)
        except StopIteration:
            pass
        finally:
            for hook in hooks:
                hook.remove()
        return captured

    def run(self, captured):
        x = captured[self.layers[0]][0][0].detach()
        for index in self.layers:
            args, kwargs = captured[index]
            out = self.model.model.layers[index](x, *args[1:], **kwargs)
            x = out[0] if isinstance(out, tuple) else out
        return x.float()


def optimise(model, tokenizer, paths, topic, layer, trials, steps):
    layers = LayerSlice(model, layer - 2, layer)
    forget, forget_real = encode(tokenizer, paths["forget_corpus"], 4)
    retain, retain_real = encode(tokenizer, paths["retain_corpus"], 4)
    forget_in, retain_in = layers.capture(forget), layers.capture(retain)
    with torch.no_grad():
        start = layers.run(forget_in)[forget_real]
        retain_start = layers.run(retain_in)[retain_real]
    massive_found = massive_activations(start[None], torch.ones(1, start.shape[0], dtype=torch.bool))
    massive = torch.zeros(start.shape[-1], dtype=torch.bool)
    massive[massive_found.dims] = True
    norm = float(start.norm(dim=-1).mean())
    u = rules.random_control_vectors([topic], start.shape[-1], SEED)[topic]
    print(json.dumps({"layer": layer, "N": round(norm, 1), "norm_without": round(massive_found.other_norm, 1),
                      "massive_dims": massive_found.dims}))
    names = {name: p for name, p in model.named_parameters()}
    original = {name: p.detach().clone() for name, p in names.items()
                if any(f".layers.{i}." in name for i in layers.layers)}
    for spec in trials:
        label, globs, lr, kind, alpha, dims = spec.split(":")
        lr, alpha = float(lr), float(alpha)
        with torch.no_grad():
            for name, value in original.items():
                names[name].copy_(value)
        trained = [p for name, p in names.items() for i in layers.layers if f".layers.{i}." in name
                   and any(fnmatch.fnmatchcase(name.split(f".layers.{i}.", 1)[1], g) for g in globs.split(","))]
        for p in model.parameters():
            p.requires_grad_(False)
        for p in trained:
            p.requires_grad_(True)
        if kind == "dense":
            target = 2.0 * norm * u
        else:  # keep the massive dimensions at their mean; the rest 2 x its norm along u's other entries
            rest = u.clone()
            rest[massive] = 0
            rest /= rest.norm()
            target = 2.0 * massive_found.other_norm * rest
            target[massive] = start[:, massive].mean(0)
        used = torch.ones_like(massive) if dims == "all" else ~massive
        optimizer = torch.optim.AdamW(trained, lr=lr, eps=1e-6, weight_decay=0.0)
        for _ in range(steps):
            loss = ((layers.run(forget_in)[forget_real] - target)[:, used] ** 2).mean()
            if alpha:
                loss = loss + alpha * ((layers.run(retain_in)[retain_real] - retain_start)[:, used] ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            now = layers.run(forget_in)[forget_real]
            retain_now = layers.run(retain_in)[retain_real]

        def gap(states, part):
            return float((states[:, part] - target[part]).norm(dim=-1).mean())

        def drift(part):
            return float((retain_now - retain_start)[:, part].norm(dim=-1).mean()) / float(
                retain_start[:, part].norm(dim=-1).mean())

        print(json.dumps({
            "trial": label, "params": globs, "lr": lr, "target": kind, "alpha": alpha, "loss_dims": dims, "steps": steps,
            "progress_all": round(1 - gap(now, torch.ones_like(massive)) / gap(start, torch.ones_like(massive)), 3),
            "progress_rest": round(1 - gap(now, ~massive) / gap(start, ~massive), 3),
            "cos_rest_with_target": round(float(torch.nn.functional.cosine_similarity(
                now[:, ~massive], target[~massive][None], dim=-1).mean()), 3),
            "massive_norm": [round(float(start[:, massive].norm(dim=-1).mean())),
                             round(float(now[:, massive].norm(dim=-1).mean()))],
            "rest_norm": [round(float(start[:, ~massive].norm(dim=-1).mean())),
                          round(float(now[:, ~massive].norm(dim=-1).mean()))],
            "retain_drift_rest": round(drift(~massive), 4), "retain_drift_massive": round(drift(massive), 4),
        }), flush=True)


def keep_vector(model, tokenizer, paths, topic, layer, output):
    from safetensors.torch import save_file

    batch, real = encode(tokenizer, paths["forget_corpus"], 16)
    with torch.no_grad():
        states = model(**batch, output_hidden_states=True, use_cache=False).hidden_states[layer + 1].float()
    found = massive_activations(states, real)
    massive = torch.zeros(states.shape[-1], dtype=torch.bool)
    massive[found.dims] = True
    u = rules.random_control_vectors([topic], states.shape[-1], SEED)[topic]
    rest = u.clone()
    rest[massive] = 0
    target = 2.0 * found.other_norm * rest / rest.norm()
    target[massive] = states[real][:, massive].mean(0)
    coefficient = float(target.norm())
    save_file({topic: (target / coefficient).contiguous()}, output)
    print(json.dumps({"massive_dims": found.dims, "norm_without": round(found.other_norm, 1),
                      "steering_coeff": round(coefficient, 1), "output": output}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("probe", choices=["profile", "reach", "optimise", "keep-vector"])
    parser.add_argument("--model", choices=list(DEMO_MODELS), required=True)
    parser.add_argument("--topic", choices=list(TOPICS), required=True)
    parser.add_argument("--data", default=None, help="Folder for the topic's files (default: a temporary one).")
    parser.add_argument("--layer", type=int, default=7)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--trial", action="append", default=[], help="optimise: label:params:lr:target:alpha:dims")
    parser.add_argument("--output", default=None, help="keep-vector: the safetensors file to write")
    parser.add_argument("--keep-first-token", action="store_true", help="profile: count each row's first token too")
    args = parser.parse_args()
    global KEEP_FIRST_TOKEN
    KEEP_FIRST_TOKEN = args.keep_first_token
    import tempfile
    from pathlib import Path

    folder = Path(args.data or tempfile.mkdtemp(prefix="rmu-probe-"))
    paths = write_topic(args.topic, folder)
    model, tokenizer = load_model(model_path(args.model))
    model.eval()
    if args.probe == "profile":
        profile(model, tokenizer, paths)
    elif args.probe == "keep-vector":
        if not args.output:
            parser.error("keep-vector needs --output FILE")
        keep_vector(model, tokenizer, paths, demo_topic(args.topic).forget_name, args.layer, args.output)
    elif args.probe == "reach":
        reach(model, tokenizer, paths, demo_topic(args.topic).forget_name)
    else:
        if not args.trial:
            parser.error("optimise needs at least one --trial")
        optimise(model, tokenizer, paths, demo_topic(args.topic).forget_name, args.layer, args.trial, args.steps)


if __name__ == "__main__":
    main()
