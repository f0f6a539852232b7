"""One experiment end to end: data → model → method → train → evaluate → run store.

Everything the dashboard's Train page and `python -m clipsvd train` do goes through
`run_experiment`, so a run made in the browser can be reproduced headless from its config.json.
"""
from __future__ import annotations

import dataclasses
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from clipsvd.choices import (
    BACKBONES,
    DEFAULT_DATASET,
    OFFICIAL_TARGETS,
    PROTOCOLS,
    TRANSFER_PROTOCOLS,
    check_choices,
    described,
)
from clipsvd.data import (
    ClassificationDataset,
    DatasetSpec,
    base_novel,
    canonical_dataset_name,
    datasets_beside,
    few_shot,
    is_test_only,
    known_class_count,
    load_dataset,
    train_transform,
)
from clipsvd.data.batches import resolve_num_workers
from clipsvd.data.sampling import cap_per_class
from clipsvd.errors import ConfigError
from clipsvd.methods import Method, create_method, get_method
from clipsvd.methods.presets import Setting, preset_family
from clipsvd.methods.base import AttachCancelled
from clipsvd.models import LoadedModel, ModelSpec, load_model
from clipsvd.runs import Run, RunStore
from clipsvd.runs.cells import RECORDED_ONLY, run_record
from clipsvd.runs.metrics import harmonic_mean, target_average
from clipsvd.runs.status import RunStatus
from clipsvd.training.evaluate import accuracy_report, predict
from clipsvd.training.loop import Progress, ProgressCallback, total_steps, train


@dataclass
class ExperimentConfig:
    """One run's inputs. Each field's help (and choice list) is written here once: the CLI's train/sweep/config/
    reproduce flags and the Train page read them."""

    method: str = field(metadata=described("adaptation method (python -m clipsvd methods lists them)"))
    model: ModelSpec = field(default_factory=ModelSpec.default, metadata=described(
        "the CLIP model the run starts from; default: clipsvd-world with its shipped weights"))
    dataset: DatasetSpec = field(default_factory=lambda: DatasetSpec("builtin", DEFAULT_DATASET), metadata=described(
        "what the run trains and tests on"))
    shots: int | None = field(default=16, metadata=described(
        "images per class for training (K); 0 or empty: the whole train split"))
    seed: int = field(default=1, metadata=described("seed of the K-shot sample and of training"))
    protocol: str = field(default="few-shot", metadata=described(
        "few-shot: K images per class, tested on all classes; base2novel: trained on the first half of the classes, "
        "tested on the base and novel halves (HM); cross-dataset / domain-generalization: K-shot training on the "
        "source dataset (ImageNet in the papers), then the same trained model tested unchanged on each target "
        "(see targets)", choices=PROTOCOLS))
    targets: list[str] = field(default_factory=list, metadata=described(
        "datasets the trained run is also tested on, unchanged, under cross-dataset or domain-generalization: "
        "names of the same kind and data root as the source (CoOp: DTD, EuroSAT, ImageNetV2, ImageNetSketch, "
        "ImageNetA, ImageNetR…), each with its own class names and its official template; empty: the official "
        "targets (cross-dataset: the 10 other CoOp datasets; domain-generalization: ImageNet-V2, -Sketch, -A, -R)"))
    backbone: str | None = field(default=None, metadata=described(
        "whose preset applies: natural (CLIP ViT-B/16), biomedical (BiomedCLIP) or world (README's search with the "
        "world CLIP); default: natural for CoOp data, biomedical for BiomedCoOp data, world for the world-* "
        "built-ins, none otherwise", choices=BACKBONES))
    hyperparameters: dict[str, Any] = field(default_factory=dict, metadata=described(
        "overrides of the method's defaults and its official preset"))
    device: str = field(default="auto", metadata=described("auto (CUDA when there is one), cpu, cuda or cuda:N"))
    eval_batch_size: int = field(default=64, metadata=described("images per evaluation batch"))
    max_test_per_class: int | None = field(default=None, metadata=described(
        "a seeded subset of the test split with at most this many images per class, the same for every method and "
        "seed (quick looks on CPU; not comparable with published numbers); empty: the whole split"))
    sweep: str | None = field(default=None, metadata=described("sweep id when the run belongs to one"))
    num_workers: int | None = field(default=None, metadata=described(
        "processes that load and augment images beside training and evaluation (pinned memory on CUDA); "
        "empty: one per CPU core less one, at most 8, on CUDA and 0 on CPU, where they would compete with "
        "the model for the cores. The batches are the same for any number"))

    def validate(self) -> None:
        get_method(self.method)
        check_choices(self)  # protocol, backbone: the lists on the fields
        if self.shots is not None and self.shots < 1:
            raise ConfigError(f"shots: expected a positive number of images per class, got {self.shots}")
        if self.max_test_per_class is not None and self.max_test_per_class < 1:
            raise ConfigError(f"max_test_per_class: expected >= 1, got {self.max_test_per_class}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ConfigError(f"num_workers: expected 0 (load in the training process) or more, got {self.num_workers}")
        self._validate_targets()

    def _validate_targets(self) -> None:
        if self.protocol not in TRANSFER_PROTOCOLS:
            if self.targets:
                raise ConfigError(f"targets: only the {' and '.join(TRANSFER_PROTOCOLS)} protocols test on targets; "
                                  f"protocol is {self.protocol}")
            return
        if is_test_only(self.dataset):
            raise ConfigError(f"dataset: {self.dataset.name} is test only (CoOp trains on none of ImageNet's "
                              "variants); give it as a target")
        if not self.targets and self.dataset.kind != "coop":
            raise ConfigError(f"targets: the official {self.protocol} targets are CoOp datasets; name the targets of "
                              f"a {self.dataset.kind} source (datasets of the same kind and root)")
        source = canonical_dataset_name(self.dataset)
        seen: set[str] = set()
        for spec in self.target_specs():
            name = canonical_dataset_name(spec)
            if name == source:
                raise ConfigError(f"targets: {spec.name} is the source dataset; its test split is scored anyway "
                                  "(accuracy)")
            if name in seen:
                raise ConfigError(f"targets: {spec.name} is named twice")
            seen.add(name)

    def target_specs(self) -> list[DatasetSpec]:
        """The targets as datasets of the source's kind and root: the given names, or the protocol's official
        targets (clipsvd.choices.OFFICIAL_TARGETS); none outside the transfer protocols."""
        if self.protocol not in TRANSFER_PROTOCOLS:
            return []
        names = self.targets or list(OFFICIAL_TARGETS[self.protocol])
        return [DatasetSpec(self.dataset.kind, name, self.dataset.root) for name in names]

    def setting(self) -> Setting:
        """What the method's preset depends on: CoOp data -> natural, BiomedCoOp data -> biomedical, the generated
        world's datasets -> world (clipsvd.methods.presets.preset_family)."""
        backbone = self.backbone or preset_family(self.dataset.kind, self.dataset.name)
        return Setting(self.protocol, self.shots, canonical_dataset_name(self.dataset), backbone)

    def method_config(self):
        """The official preset for this setting, the user's overrides on top; prompts follow a dataset
        template override unless the overrides name templates themselves."""
        overrides = dict(self.hyperparameters)
        if self.dataset.template is not None:
            overrides.setdefault("templates", [self.dataset.template])
        return get_method(self.method).make_config(overrides, self.setting())

    def preset(self):
        return get_method(self.method).preset(self.setting())

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["model"], data["dataset"] = self.model.to_dict(), self.dataset.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExperimentConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known - set(RECORDED_ONLY)
        if unknown:
            raise ConfigError(f"experiment config: unknown field(s) {sorted(unknown)}")
        values = {k: v for k, v in data.items() if k in known}
        # no model recorded: the field's default (the shipped world CLIP), as for a config made in code
        values["model"] = ModelSpec.from_dict(data.get("model") or {})
        values["dataset"] = DatasetSpec.from_dict(data["dataset"]) if "dataset" in data else DatasetSpec("builtin", DEFAULT_DATASET)
        return cls(**values)


@dataclass(frozen=True)
class TargetChoices:
    """What a targets picker offers for a source dataset under a transfer protocol: the datasets found beside
    the source (same kind and root, the source and CoOp's train-less variants' roles respected), the protocol's
    official targets among them (the default), and the official ones not found, each with where it belongs."""

    options: list[str]
    default: list[str]
    missing: dict[str, str]  # official target -> where CoOp's DATASETS.md puts it


def target_choices(dataset: DatasetSpec, protocol: str) -> TargetChoices:
    """The Train page's targets widget: the datasets beside `dataset` minus the source itself, the official
    targets (clipsvd.choices.OFFICIAL_TARGETS, CoOp data only) among them as the default, and the official ones
    absent from the data root with the folder each needs."""
    if protocol not in TRANSFER_PROTOCOLS:
        return TargetChoices([], [], {})
    source = canonical_dataset_name(dataset)
    options = [name for name in datasets_beside(dataset)
               if canonical_dataset_name(DatasetSpec(dataset.kind, name, dataset.root)) != source]
    if dataset.kind != "coop":
        return TargetChoices(options, [], {})
    from clipsvd.data.loaders.coop import expected_folder

    official = [name for name in OFFICIAL_TARGETS[protocol] if name != source]
    return TargetChoices(options, [n for n in official if n in options],
                         {n: expected_folder(n) for n in official if n not in options})


def planned_steps(config: ExperimentConfig, dataset: ClassificationDataset | None = None) -> int:
    """Optimiser steps the run will take: from the prepared training split when the data is given, else from
    the dataset's known class count (CoOp, BiomedCoOp) and K."""
    method_config = config.method_config()
    if dataset is not None:
        return total_steps(method_config, len(prepare_data(config, dataset).train_set.train))
    if method_config.iterations is not None or method_config.cached_views:
        return total_steps(method_config, 0)
    classes = known_class_count(config.dataset)
    if classes is None or config.shots is None:
        raise ConfigError(f"steps of {config.dataset.name}: give the data root (the class count or the size of the "
                          "whole training split is not known without it)")
    train_classes = math.ceil(classes / 2) if config.protocol == "base2novel" else classes
    return total_steps(method_config, config.shots * train_classes)


def resolved_config(config: ExperimentConfig, dataset: ClassificationDataset | None = None) -> dict[str, Any]:
    """Everything a run will use, as config.json records it: the setting, the method config with the official
    preset and the overrides applied, the preset's sources and differences, and the total optimiser steps."""
    config.validate()
    return run_record(config, planned_steps(config, dataset))


@dataclass
class PreparedData:
    """The splits one experiment trains and tests on, after K-shot sampling and the base/novel cut."""

    train_set: ClassificationDataset
    test_sets: dict[str, ClassificationDataset]  # "all", or "base" and "novel"; "all" and each target by name
    # images of each test split before any max_test_per_class cap: the "N" of "n of N" evaluated
    split_sizes: dict[str, int] = field(default_factory=dict)
    # the targets of a transfer protocol, each with the templates its own official config gives (empty: the
    # dataset's template); the other test sets use the method's templates
    target_templates: dict[str, list[str]] = field(default_factory=dict)


def target_templates(config: ExperimentConfig, target: str) -> list[str]:
    """A target's prompt templates: the method's official preset for the target dataset under the same protocol
    (CLIP-SVD's configs/cross_dataset/<target>.yaml), else the target dataset's own template (an empty list).
    The user's `templates` override is the source's: the official scripts give each target its own."""
    setting = dataclasses.replace(config.setting(), dataset=target)
    return list(get_method(config.method).preset(setting).values.get("templates") or [])


def prepare_data(config: ExperimentConfig, dataset: ClassificationDataset | None = None,
                 load_targets: bool = False,
                 load: Callable[[DatasetSpec], ClassificationDataset] = load_dataset) -> PreparedData:
    """The training set and the test sets; with `load_targets`, the transfer protocols' targets too (evaluation
    and its time estimate want them; step counts, prompts and analyses of the source do not), each read with
    `load` (the dashboard passes its cached loader)."""
    dataset = dataset or load_dataset(config.dataset)
    templates: dict[str, list[str]] = {}
    if config.protocol == "base2novel":
        base, novel = base_novel(dataset)
        train_set, test_sets = base, {"base": base, "novel": novel}
    else:
        train_set, test_sets = dataset, {"all": dataset}
        specs = config.target_specs() if load_targets else []
        for name, target in ((canonical_dataset_name(spec), load(spec)) for spec in specs):
            test_sets[name] = target
            templates[name] = target_templates(config, name)
    split_sizes = {k: len(d.test) for k, d in test_sets.items()}
    if config.shots is not None:
        train_set = dataclasses.replace(
            train_set, train=few_shot(train_set.train, config.shots, config.seed, classnames=train_set.classnames))
    if config.max_test_per_class is not None:
        # The subset ignores the training seed: every method and seed is scored on the same images.
        test_sets = {k: dataclasses.replace(d, test=cap_per_class(d.test, config.max_test_per_class))
                     for k, d in test_sets.items()}
    return PreparedData(train_set, test_sets, split_sizes, templates)


def run_experiment(
    config: ExperimentConfig,
    store: RunStore | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    dataset: ClassificationDataset | None = None,
) -> Run:
    """Train and evaluate one method; saves the run (also when cancelled or diverged) if a store is given."""
    config.validate()
    if not get_method(config.method).runnable:
        raise ConfigError(f"method: '{config.method}' runs are made by `clipsvd import`, not trained")
    report = on_progress or (lambda progress: None)
    method_config = config.method_config()
    report(Progress("load", message=f"loading dataset {config.dataset.name}"))
    data = prepare_data(config, dataset, load_targets=True)
    data.train_set.train.validate()
    report(Progress("load", message=f"building {config.model.label}"))
    loaded = load_model(config.model, config.device)
    report(Progress("load", message=f"built {loaded.label}"))
    method = create_method(config.method, method_config)
    prompts = data.train_set.prompts(method_config.templates)
    report(Progress("load", message=f"attaching {method.display_name}"))
    try:
        method.attach(loaded, prompts, cancel=cancel, progress=lambda done, total, message: report(
            Progress("load", done, total, message=message)))
    except AttachCancelled as exc:
        report(Progress("done", message=RunStatus.CANCELLED))
        return Run("unsaved", config.to_dict(), {}, status=RunStatus.CANCELLED, message=str(exc))
    workers = resolve_num_workers(config.num_workers, loaded.device)
    result = train(method, data.train_set.train, prompts,
                   train_transform(loaded.image_size, loaded.mean, loaded.std, method_config.crop_scale_min),
                   seed=config.seed, on_progress=on_progress, cancel=cancel, num_workers=workers)
    metrics: dict[str, Any] = {**_parameter_metrics(method), "train_seconds": result.seconds, "steps": result.steps,
                               "precision": result.precision}
    if result.status == RunStatus.COMPLETED:
        metrics.update(evaluate_method(method, data, config.eval_batch_size, report, workers))
    record = run_record(config, total_steps(method_config, len(data.train_set.train)),
                        prompts=[list(p) if isinstance(p, tuple) else p for p in prompts])
    if loaded.info is not None:  # where the weights came from, the activation built, any note (e.g. activation unknown)
        record["model_source"] = {**loaded.info.to_dict(), "label": loaded.label}
    run_id = store.new_run_id(config.method, config.dataset.name) if store else "unsaved"
    run = Run(run_id, record, metrics, status=result.status, message=result.message, history=result.history)
    report(Progress("done", result.steps, result.steps, message=result.status))
    return store.save(run, method.adapter_state()) if store else run


def _parameter_metrics(method: Method) -> dict[str, Any]:
    report = method.parameter_report()
    metrics = {"trainable": report["trainable"], "total_parameters": report["total"],
               "trainable_fraction": report["fraction"]}
    if "paper_fraction" in report:
        metrics.update(paper_total_parameters=report["paper_total"], paper_trainable_fraction=report["paper_fraction"])
    return metrics


def evaluate_method(method: Method, data: PreparedData, batch_size: int, report: ProgressCallback,
                    num_workers: int = 0) -> dict[str, Any]:
    """Accuracy per test set; base/novel/HM under base2novel (novel is None where a method cannot do it); under
    the transfer protocols `accuracy` is the source's and each target T adds accuracy_T, per_class_T and n_test_T,
    with target_average their mean (None where a method cannot score new classes)."""
    transform = method.loaded.eval_transform()
    metrics: dict[str, Any] = {"eval_seconds": 0.0}
    start = time.perf_counter()
    for name, test_set in data.test_sets.items():
        target = name in data.target_templates
        key = "accuracy" if name == "all" else f"accuracy_{name}" if target else name
        per_class_key = "per_class" if name == "all" else f"per_class_{name}"
        if (name == "novel" or target) and not method.supports_novel_classes:
            metrics[key], metrics[per_class_key] = None, {}
            continue
        templates = (data.target_templates[name] or [test_set.template]) if target else method.config.templates
        predictions, labels = predict(
            method, test_set.test, test_set.prompts(templates), transform, batch_size,
            on_batch=lambda i, n, name=name: report(Progress("evaluate", i, n, message=f"evaluating {name}")),
            num_workers=num_workers,
        )
        result = accuracy_report(predictions, labels, test_set.classnames)
        metrics[key] = result["accuracy"]
        metrics[per_class_key] = result["per_class"]
        metrics[f"n_test_{name}"] = result["n"]
        if name in data.split_sizes:
            metrics[f"n_test_split_{name}"] = data.split_sizes[name]
    if "base" in data.test_sets:
        metrics["hm"] = harmonic_mean(metrics.get("base"), metrics.get("novel"))
    if data.target_templates:
        metrics["targets"] = list(data.target_templates)
        metrics["target_average"] = target_average([metrics[f"accuracy_{t}"] for t in data.target_templates])
    metrics["eval_seconds"] = time.perf_counter() - start
    return metrics


def restore_run(run: Run, device: str = "auto") -> tuple[LoadedModel, Method]:
    """Rebuild a saved run: the pretrained model, the method attached, its trained tensors loaded back."""
    config = ExperimentConfig.from_dict(run.config)
    loaded = load_model(config.model, device)
    method_cls = get_method(config.method)
    method = method_cls(method_cls.make_config(run.config.get("method_config") or {}, config.setting()))
    prompts = _prompts_of_run(run, config, method.config.templates)
    method.attach(loaded, prompts)
    method.load_adapter_state(run.adapter_tensors(), source=f"run {run.run_id} ({run.path})")
    loaded.model.eval()
    return loaded, method


def _prompts_of_run(run: Run, config: ExperimentConfig, templates: list[str]) -> list:
    """The class prompts the run trained with: from its config.json (no dataset needed), or rebuilt from the
    dataset for runs saved before prompts were recorded."""
    if run.config.get("prompts") is not None:  # recorded (an imported run records none: nothing trained on them)
        return [tuple(p) if isinstance(p, list) else p for p in run.config["prompts"]]
    data = prepare_data(dataclasses.replace(config, shots=None, max_test_per_class=None))
    return data.train_set.prompts(templates)
