"""The run folder ``rmu unlearn --output`` writes: complete, or clearly not (formerly ``rmu.checkpoint``).

While a run is going, everything lives in ``<output>.incomplete/``: the control vectors from the
start, and with ``save_every`` a ``resume/`` folder (trained tensors, optimizer moments, noise
generator, step log, the run's fingerprint; safetensors and JSON only, no pickle). At the end the
checkpoint, its model card (:mod:`rmu.model_card`) and run.json are written there and the folder
is renamed to ``<output>``. A crash leaves only the ``.incomplete`` folder, which ``--resume`` continues and which never looks like a finished
run. Which folders may be written or replaced, and the lock held meanwhile: :mod:`rmu.outputs`.
The checkpoint inside it is written by :func:`rmu.loading.save_patched` (errors: ``CheckpointError``);
a folder that must not be written, or a resume that does not match, is refused with a ``ConfigError``
naming the option.

Other modules name the folder's files through the constants below, never as string literals.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from rmu import fingerprint, model_card, outputs, rules
from rmu.config import ConfigError, UnlearnConfig

RUN_FILE = "run.json"
VECTORS_FILE = "control_vectors.safetensors"
STATE_FILE = "state.json"  # in RESUME_DIR
RESUME_DIR = "resume"
INCOMPLETE_SUFFIX = ".incomplete"  # the folder's name while the run is going
COMMAND = "unlearn"
log = logging.getLogger("rmu")


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
    fingerprint: dict | None = None
    lock: outputs.OutputLock | None = field(default=None, repr=False)

    @property
    def work(self) -> Path:
        return self.output.with_name(self.output.name + INCOMPLETE_SUFFIX)

    @property
    def resume_dir(self) -> Path:
        return self.work / RESUME_DIR

    @classmethod
    @contextlib.contextmanager
    def claim(cls, config: UnlearnConfig, is_main: bool = True):
        """Check the output and hold its lock (rank 0) for the whole run; see :meth:`check`."""
        plan = cls.check(config, may_delete=is_main, lock=is_main)
        try:
            yield plan
        finally:
            plan.release()

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    @classmethod
    def check(cls, config: UnlearnConfig, may_delete: bool = True, lock: bool = False) -> "OutputPlan":
        """Refuse, before any slow work, outputs that would clobber a result or lose a partial run.

        ``may_delete=False`` (ranks other than 0) checks the same but leaves clearing to rank 0;
        ``lock=True`` takes the output's lock (released by :meth:`release`).
        """
        if config.output is None:
            if config.resume or config.save_every:
                raise ConfigError("--resume and --save-every need --output")
            return cls(config, None, False)
        inputs = outputs.input_paths(config.model, config.forget, config.retain, config.control_vectors)
        output = outputs.check_folder(config.output, inputs)
        plan = cls(config, output, False)
        outputs.check_apart(plan.work, inputs, "--output's partial run folder")
        outputs.check_ours(output, "--output", config.overwrite)  # refused without leaving a lock file behind
        if lock:
            plan.lock = outputs.OutputLock(output, COMMAND).acquire()
        try:
            plan._check_contents(may_delete)
        except BaseException:
            plan.release()
            raise
        return plan

    def _check_contents(self, may_delete: bool) -> None:
        config, output = self.config, self.output
        outputs.check_ours(output, "--output", config.overwrite)
        outputs.check_ours(self.work, "--output's partial run folder", config.overwrite)
        saved = self._saved_state()
        if output.exists() and not outputs.is_empty_folder(output) and not config.overwrite:
            if is_finished_run(output):
                nothing = "; there is nothing to resume" if config.resume and saved is None else ""
                raise ConfigError(f"--output {output} already holds a finished run{nothing}; "
                                  "pass --overwrite to replace it")
            raise ConfigError(f"--output {output} exists and is not empty; choose another folder or pass --overwrite")
        self.fingerprint = fingerprint.run_fingerprint(config)
        if config.resume and saved is not None:
            changed = fingerprint.differences(saved.get("fingerprint"), self.fingerprint)
            if changed:
                raise ConfigError(
                    f"--resume: the interrupted run in {self.work} is not this run: " + "; ".join(changed)
                    + ". Resume with the same inputs and options, or pass --overwrite (without --resume) to start over."
                )
            self.resuming = True
            log.warning("--resume: continuing the interrupted run in %s from step %d", self.work, saved["next_step"])
            return
        if saved is not None and not config.overwrite:
            raise ConfigError(
                f"{self.work} holds an interrupted run saved at step {saved['next_step']}; "
                "pass --resume to continue it or --overwrite to start over"
            )
        if config.resume:
            log.warning("--resume: nothing to resume in %s (no saved state: the run stopped before its first save "
                        "or never started); starting afresh", self.work)
        elif self.work.exists() and saved is None:
            log.warning("%s holds a run stopped before its first save (nothing to resume); starting afresh", self.work)
        if self.work.exists() and may_delete:
            shutil.rmtree(self.work)

    def _saved_state(self) -> dict | None:
        state = self.resume_dir / STATE_FILE
        if not state.is_file():
            return None
        try:
            return json.loads(state.read_text())
        except json.JSONDecodeError:
            return None  # cannot happen with atomic writes; treat as nothing saved

    def begin(self, vectors: dict[str, torch.Tensor]) -> None:
        if self.output is None:
            return
        outputs.mark(self.work, COMMAND)
        rules.save_control_vectors(vectors, self.work / VECTORS_FILE)

    # -- resumable state ------------------------------------------------------------------------

    def save_state(self, next_step: int, records: list[dict], trained: dict, optimizer, noise: torch.Generator) -> None:
        """Write the state of step ``next_step``; the atomic replacement of state.json commits it.

        Tensor files carry the step in their names, so the files the previous state.json names
        stay intact until the new state.json has replaced it: a crash at any point leaves one
        complete state.
        """
        folder = self.resume_dir
        folder.mkdir(parents=True, exist_ok=True)
        files = {"trained": f"trained-{next_step:08d}.safetensors", "optimizer": f"optimizer-{next_step:08d}.safetensors"}
        _save_tensors({k: v.detach().contiguous().cpu() for k, v in trained.items()}, folder / files["trained"])
        moments, groups = _optimizer_tensors(optimizer)
        moments["noise_generator_state"] = noise.get_state()
        _save_tensors(moments, folder / files["optimizer"])
        state = {"next_step": next_step, "records": records, "param_groups": groups, "files": files,
                 "config": self.config.model_dump(), "fingerprint": self.fingerprint}
        outputs.write_atomic(folder / STATE_FILE, json.dumps(state))
        for stale in folder.iterdir():
            if stale.name not in {STATE_FILE, *files.values()}:
                stale.unlink()

    def load_state(self, trained: dict, optimizer, noise: torch.Generator) -> tuple[int, list[dict]]:
        state = json.loads((self.resume_dir / STATE_FILE).read_text())
        files = state.get("files", {"trained": "trained.safetensors", "optimizer": "optimizer.safetensors"})
        values = load_file(str(self.resume_dir / files["trained"]))
        with torch.no_grad():
            for name, parameter in trained.items():
                parameter.copy_(values[name])
        tensors = load_file(str(self.resume_dir / files["optimizer"]))
        noise.set_state(tensors.pop("noise_generator_state"))
        _load_optimizer_tensors(optimizer, tensors, state["param_groups"])
        return state["next_step"], state["records"]

    # -- the finished run -----------------------------------------------------------------------

    def finish(self, result, structure) -> Path:
        outputs.mark(self.work, COMMAND)
        save_model(result, self.work)
        rules.save_control_vectors(result.control_vectors, self.work / VECTORS_FILE)
        shutil.rmtree(self.resume_dir, ignore_errors=True)
        run = run_summary(result, structure)
        run["fingerprint"] = self.fingerprint
        model_card.write_card(self.work, run, self.output)  # replaces a README.md copied from the source
        outputs.write_atomic(self.work / RUN_FILE, json.dumps(run, indent=2))
        if not self.output.exists():
            self.work.rename(self.output)
            return self.output
        outputs.check_ours(self.output, "--output", overwrite=True)  # still rmu's (or empty) at the end?
        trash = self.output.with_name(self.output.name + f".replaced-{int(time.time())}")
        self.output.rename(trash)
        self.work.rename(self.output)
        shutil.rmtree(trash)
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


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors through a temporary file and a rename, flushed to disk."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(temporary))
    with temporary.open("rb") as stream:
        os.fsync(stream.fileno())
    os.replace(temporary, path)


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

    from rmu.version import __version__

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
        "health": getattr(result, "health", None),  # rmu.health: did the run work?
        "calibration": getattr(result, "calibration", None),  # rmu.scale, when --auto was given
        "loss_dims": getattr(result, "loss_dims", None),  # --loss-dims informative: the massive dimensions left out
    }
