"""Writing runs so that a directory either holds a complete result or clearly does not.

While a run is going, everything lives in ``<output>.incomplete/``: the control vectors from the
start, and with ``save_every`` a ``resume/`` folder (trained tensors, optimizer moments, noise
generator, step log; safetensors and JSON only, no pickle). At the end the checkpoint and run.json
are written there and the folder is renamed to ``<output>``. A crash leaves only the
``.incomplete`` folder, which ``--resume`` continues and which never looks like a finished run.
"""

from __future__ import annotations

import json
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from rmu import rules
from rmu.config import ConfigError, UnlearnConfig

RUN_FILE = "run.json"
VECTORS_FILE = "control_vectors.safetensors"
# Options that may differ between an interrupted run and its resumption.
_RESUME_FREE_OPTIONS = {"resume", "overwrite", "save_every", "device", "gradient_checkpointing"}


def is_finished_run(folder: Path) -> bool:
    run_file = folder / RUN_FILE
    if not run_file.is_file():
        return False
    try:
        return json.loads(run_file.read_text()).get("status") == "complete"
    except json.JSONDecodeError:
        return False


@dataclass
class OutputPlan:
    config: UnlearnConfig
    output: Path | None
    resuming: bool

    @property
    def work(self) -> Path:
        return self.output.with_name(self.output.name + ".incomplete")

    @property
    def resume_dir(self) -> Path:
        return self.work / "resume"

    @classmethod
    def check(cls, config: UnlearnConfig, may_delete: bool = True) -> "OutputPlan":
        """Refuse, before any slow work, outputs that would clobber a result or lose a partial run.

        ``may_delete=False`` (ranks other than 0) checks the same but leaves clearing to rank 0.
        """
        if config.output is None:
            if config.resume or config.save_every:
                raise ConfigError("--resume and --save-every need --output")
            return cls(config, None, False)
        output = Path(config.output)
        plan = cls(config, output, False)
        if output.exists() and not config.overwrite:
            if is_finished_run(output):
                raise ConfigError(f"--output {output} already holds a finished run; pass --overwrite to replace it")
            if any(output.iterdir()) if output.is_dir() else True:
                raise ConfigError(f"--output {output} exists and is not empty; choose another folder or pass --overwrite")
        if config.resume:
            if not (plan.resume_dir / "state.json").is_file():
                raise ConfigError(f"--resume: no saved state in {plan.resume_dir}; run without --resume")
            plan._check_same_run()
            plan.resuming = True
        elif plan.work.exists():
            if not config.overwrite:
                raise ConfigError(
                    f"{plan.work} holds an interrupted run; pass --resume to continue it or --overwrite to start over"
                )
            if may_delete:
                shutil.rmtree(plan.work, ignore_errors=True)
        return plan

    def _check_same_run(self) -> None:
        saved = json.loads((self.resume_dir / "state.json").read_text())["config"]
        current = self.config.model_dump()
        changed = [k for k in current if k not in _RESUME_FREE_OPTIONS and saved.get(k) != current[k]]
        if changed:
            raise ConfigError(f"--resume: options differ from the interrupted run: {', '.join(changed)}")

    def begin(self, vectors: dict[str, torch.Tensor]) -> None:
        if self.output is None:
            return
        self.work.mkdir(parents=True, exist_ok=True)
        rules.save_control_vectors(vectors, self.work / VECTORS_FILE)

    # -- resumable state ------------------------------------------------------------------------

    def save_state(self, next_step: int, records: list[dict], trained: dict, optimizer, noise: torch.Generator) -> None:
        staging = self.work / "resume.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in trained.items()}, str(staging / "trained.safetensors"))
        moments, groups = _optimizer_tensors(optimizer)
        moments["noise_generator_state"] = noise.get_state()
        save_file(moments, str(staging / "optimizer.safetensors"))
        state = {"next_step": next_step, "records": records, "param_groups": groups,
                 "config": self.config.model_dump()}
        (staging / "state.json").write_text(json.dumps(state))
        shutil.rmtree(self.resume_dir, ignore_errors=True)
        staging.rename(self.resume_dir)

    def load_state(self, trained: dict, optimizer, noise: torch.Generator) -> tuple[int, list[dict]]:
        state = json.loads((self.resume_dir / "state.json").read_text())
        values = load_file(str(self.resume_dir / "trained.safetensors"))
        with torch.no_grad():
            for name, parameter in trained.items():
                parameter.copy_(values[name])
        tensors = load_file(str(self.resume_dir / "optimizer.safetensors"))
        noise.set_state(tensors.pop("noise_generator_state"))
        _load_optimizer_tensors(optimizer, tensors, state["param_groups"])
        return state["next_step"], state["records"]

    # -- the finished run -----------------------------------------------------------------------

    def finish(self, result, structure) -> Path:
        self.work.mkdir(parents=True, exist_ok=True)
        save_model(result, self.work)
        rules.save_control_vectors(result.control_vectors, self.work / VECTORS_FILE)
        shutil.rmtree(self.resume_dir, ignore_errors=True)
        run = run_summary(result, structure)
        (self.work / RUN_FILE).write_text(json.dumps(run, indent=2))
        if self.output.exists():
            trash = self.output.with_name(self.output.name + f".replaced-{int(time.time())}")
            self.output.rename(trash)
            shutil.rmtree(trash)
        self.work.rename(self.output)
        return self.output


def save_model(result, folder: Path) -> None:
    """A normal Hugging Face checkpoint of the updated model (safetensors, config, tokenizer).

    When the engine loaded the model from a checkpoint, the source files are copied and only the
    trained tensors rewritten (the model in memory may hold layers 0..l only). A model passed in
    memory is saved whole.
    """
    if result.loaded_from_source:
        from rmu.loading import save_patched

        parameters = dict(result.model.named_parameters())
        changed = result.final_weights or {n: parameters[n].detach() for n in result.trained_parameters}
        save_patched(result.config.model, folder, changed)
    else:
        result.model.save_pretrained(folder, safe_serialization=True)
        result.tokenizer.save_pretrained(folder)


def _optimizer_tensors(optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    state = optimizer.state_dict()
    tensors = {}
    for index, moments in state["state"].items():
        for key, value in moments.items():
            tensors[f"{index}.{key}"] = torch.as_tensor(value).detach().contiguous().cpu()
    return tensors, state["param_groups"]


def _load_optimizer_tensors(optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def library_versions() -> dict[str, str]:
    import transformers

    from rmu import __version__

    return {"rmu": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


def run_summary(result, structure) -> dict:
    config = result.config
    return {
        "status": "complete",
        "config": config.model_dump(),
        "versions": library_versions(),
        "seed": config.seed,
        "model_structure": {"layers": structure.layers_name, "num_layers": structure.num_layers,
                            "hidden_size": structure.hidden_size},
        "trained_parameters": result.trained_parameters,
        "coefficients": result.coefficients,
        "control_vectors": VECTORS_FILE,
        "seconds": round(result.seconds, 2),
        "keywords": getattr(result, "keywords", None),  # --keyword-robust (rmu.keywords); keywords.json has it too
        "steps": result.records,
    }
