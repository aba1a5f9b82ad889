"""Which config sections a pipeline uses, the values it will use, and every field's help.

    from pipelines.config import load_config, usage
    cfg = load_config("quickstart")
    usage.used_sections(cfg)   # ('data', 'model', 'train', 'cluster', 'tracking', 'registry')
    usage.effective(cfg)       # those sections as plain dicts, with the values a run uses
    usage.fields(cfg)          # (key, type, default, help) of each field of those sections

``visionray show`` prints :func:`effective`; ``visionray show PIPELINE --help`` prints :func:`fields`;
a run logs only the used sections as MLflow params (the whole config stays in ``config.yaml``).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import typing
from typing import Any, Literal

from pipelines.config.base import _hints
from pipelines.config.schema import Config

#: Every run starts Ray (cluster) and logs to MLflow (tracking).
ALWAYS = ("cluster", "tracking")

#: The sections each stage reads, beside ALWAYS (``_stage_sections`` swaps them for kinds that train
#: something other than an image classifier).
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "ingest": ("data",),
    "preprocess": ("data",),
    "train": ("data", "model", "train"),
    "evaluate": ("data", "model", "train"),
    "register": ("registry",),
    "baseline": ("data", "charlm"),
    "knn": ("data", "knn"),
    "zoo": ("data", "train", "zoo"),             # each member's architecture comes from zoo.models
    "transfer": ("data", "train", "transfer"),   # the architecture comes from transfer.source
    "sweep": ("data", "model", "train", "tune"),
    "ensemble": ("data", "model", "train", "ensemble"),
    "compress": ("data", "model", "train", "registry", "compress"),  # the source: <registry name>@champion
    "report": (),
    "bench": ("data", "model", "train", "bench"),
    "explain": ("data", "explain"),  # the architecture comes from explain.model
    "style": ("style",),
}

#: Sections that only some fields of are read by a kind: (kind, section) -> those fields.
PARTLY_USED: dict[tuple[str, str], tuple[str, ...]] = {
    ("caption", "model"): ("dropout",),  # the captioner's own sizes are caption.*
    ("generate", "model"): ("name", "width", "depth"),
}

#: Fields that only some kinds read: dotted key -> those kinds (a bench of text data counts as charlm).
FIELD_KINDS: dict[str, tuple[str, ...]] = {
    "train.bptt": ("charlm",),
    "train.clip_norm": ("charlm",),
    "train.freeze": ("transfer",),
    "model.backbone_from": ("detect", "segment"),
    "model.tta": ("classify", "sweep", "ensemble", "retrain", "bench", "compress"),  # image classifiers
}

#: Each model family's options (beside dropout and batchnorm) and their defaults: the keyword
#: parameters of ``components.models.BUILDERS`` (tests/pipelines/test_config_usage.py holds the two
#: equal). Copied here because reading them imports torch, and `visionray show` must stay fast.
FAMILY_OPTIONS: dict[str, dict[str, Any]] = {
    "softmax": {},
    "convnet": {"width": 32},
    "resnet": {"depth": 20, "width": 16, "block": "basic", "groups": 1},
    "mlp": {"hidden": (256, 256), "activation": "relu", "init": "he"},
    "alexnet": {"width": 32},
    "vgg": {"width": 32},
    "googlenet": {"width": 32},
    "wide_resnet": {"depth": 16, "width": 2},
    "densenet": {"depth": 40, "growth": 12},
    "hoglinear": {},
    "fcn": {"width": 16, "depth": 3},
    "unet": {"width": 16, "depth": 3},
    "fcn_resnet": {"depth": 20, "width": 16},
    # detectors (components.models.detectors.DETECTOR_OPTIONS): the size of their ResNet backbone
    "centernet": {"depth": 20, "width": 16}, "two_stage": {"depth": 20, "width": 16},
    "localizer": {"depth": 20, "width": 16},
    # generative models (components.models.generative: each class's keyword defaults)
    "vae": {"width": 32},
    "pixelcnn": {"width": 32, "depth": 5},
    "dcgan": {"width": 24},
    "cdcgan": {"width": 24},
    "ddpm": {"width": 16},
}
#: ModelConfig fields that are family options (the others apply to every family).
_OPTION_FIELDS = ("width", "depth", "hidden", "activation", "init", "block", "groups", "growth")

#: The (H, W, C) of the images each fixed-shape source gives (its reader in components/data/sources;
#: tests/pipelines/test_config_usage.py holds them equal); image_folder's are data.image_size and
#: data.channels. Here rather than read from the data, so that `visionray show` reads nothing.
SOURCE_SHAPES: dict[str, tuple[int, int, int]] = {
    "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3), "digits": (8, 8, 1), "fashion_grid": (56, 56, 1)}

#: Sources that generate their scenes (data.num_images of them).
GENERATED_SOURCES = ("shapes", "fashion_scenes")
#: Data fields that only image sources read.
_IMAGE_ONLY = ("image_size", "channels", "normalization", "augment", "classes")
_TEXT_SOURCES = ("austen", "text")
#: The data fields the captioning ingest reads (pipelines.stages.ingest), and the grids' shape.
_GRID_FIELDS = ("name", "path", "cache_dir", "image_size", "channels", "split_seed", "allow_download")


def _stage_sections(cfg: Config, stage: str) -> tuple[str, ...]:
    kind = cfg.kind
    if kind == "rl" or (kind == "sweep" and cfg.tune.base == "rl"):
        # no image data: ingest and preprocess have nothing to do (a sweep of agents skips them)
        return {"train": ("rl",), "evaluate": ("rl",), "sweep": ("rl", "tune")}.get(
            stage, () if stage in ("ingest", "preprocess") else STAGE_SECTIONS[stage])
    if kind == "knn" and stage == "evaluate":
        return ("data",)  # the fitted neighbours predict; no net, no recipe
    if kind == "charlm" and stage in ("train", "evaluate"):
        return ("data", "train", "charlm")
    if kind == "generate" and stage in ("train", "evaluate"):
        return ("data", "model", "train", "generate")
    if kind == "caption" and stage in ("ingest", "train", "evaluate"):
        return ("data", "caption") + (("model", "train") if stage != "ingest" else ())
    if kind == "detect" and stage in ("train", "evaluate"):
        return STAGE_SECTIONS[stage] + ("detect",)
    if kind == "bench" and stage == "bench" and cfg.data.name in _TEXT_SOURCES:
        return ("data", "train", "charlm", "bench")  # the bench times charlm's training loop
    return STAGE_SECTIONS[stage]


def used_sections(cfg: Config) -> tuple[str, ...]:
    """The sections of ``cfg`` that its pipeline reads (by its kind and stages), in schema order."""
    wanted = set(ALWAYS)
    for stage in cfg.stages:
        wanted.update(_stage_sections(cfg, stage))
    if cfg.kind == "retrain":
        wanted.add("retrain")
    if "registry" in wanted and not cfg.registry.enabled:
        wanted.discard("registry")
    return tuple(name for name in section_names() if name in wanted)


def section_names() -> tuple[str, ...]:
    """Config's sections (the fields that are dataclasses), in schema order."""
    return tuple(f.name for f in dataclasses.fields(Config) if dataclasses.is_dataclass(_hints(Config)[f.name]))


def used_dict(cfg: Config) -> dict[str, Any]:
    """``cfg.to_dict()`` without the sections its pipeline does not read (the top-level values stay)."""
    used, sections = set(used_sections(cfg)), set(section_names())
    return {k: v for k, v in cfg.to_dict().items() if k not in sections or k in used}


def effective(cfg: Config) -> dict[str, Any]:
    """:func:`used_dict` with the values a run will use where the config leaves them to someone else:
    ``registry.name`` (the default registered name), ``data.image_size``/``channels`` (the source's
    own shape), ``model.width`` 0 (the family's default); fields the family or source ignores left out."""
    out = used_dict(cfg)
    if "registry" in out:
        out["registry"]["name"] = cfg.registered_model_name
    if "data" in out:
        _resolve_data(cfg, out["data"])
    if "model" in out:
        _resolve_model(cfg, out["model"])
    for (kind, section), keep in PARTLY_USED.items():
        if cfg.kind == kind and section in out:
            out[section] = {k: v for k, v in out[section].items() if k in keep}
    kind = "charlm" if cfg.kind == "bench" and cfg.data.name in _TEXT_SOURCES else cfg.kind
    for key, kinds in FIELD_KINDS.items():
        section, _, name = key.partition(".")
        if kind not in kinds and section in out:
            out[section].pop(name, None)
    return out


def source_shape(cfg: Config) -> tuple[int, int, int] | None:
    """The (H, W, C) of the images ``data.name`` gives (as ingest reads them), None for text."""
    d = cfg.data
    if d.name in ("image_folder", "coco_captions", "mask_folder", "coco"):
        return (d.image_size, d.image_size, d.channels)
    if d.name in GENERATED_SOURCES:  # generated at data.image_size: shapes in colour, Fashion-MNIST items grey
        return (d.image_size, d.image_size, 3 if d.name == "shapes" else 1)
    return SOURCE_SHAPES.get(d.name)


def _resolve_data(cfg: Config, data: dict[str, Any]) -> None:
    if cfg.data.name in _TEXT_SOURCES:
        for key in _IMAGE_ONLY:
            data.pop(key, None)
        return
    if cfg.data.name not in GENERATED_SOURCES:
        data.pop("num_images", None)
    shape = source_shape(cfg)
    if shape is not None:
        data["image_size"], data["channels"] = shape[0], shape[2]
    if cfg.data.name == "fashion_grid":
        for key in [k for k in data if k not in _GRID_FIELDS]:
            del data[key]


def _resolve_model(cfg: Config, model: dict[str, Any]) -> None:
    options = FAMILY_OPTIONS.get(cfg.model.name, {})
    for key in _OPTION_FIELDS:
        if key not in options:
            model.pop(key, None)
    if "width" in options and not cfg.model.width:  # 0: the family's default (train.model_spec)
        model["width"] = options["width"]


@dataclasses.dataclass(frozen=True)
class Field:
    key: str       # dotted: train.epochs
    type: str      # int, float, bool, text, one of: a|b, list of int, ...
    default: Any   # the schema's default (a conf file may set another; `visionray show` prints that)
    help: str


def fields(cfg: Config) -> list[Field]:
    """Each field of the sections ``cfg``'s pipeline uses (nested sections flattened), with its type,
    schema default and help text, in schema order."""
    out: list[Field] = []
    for name in used_sections(cfg):
        out += _fields_of(_hints(Config)[name], f"{name}.")
    return out


def _fields_of(cls: type, prefix: str) -> list[Field]:
    out: list[Field] = []
    for f in dataclasses.fields(cls):
        tp = _hints(cls)[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            out += _fields_of(tp, f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        out.append(Field(f"{prefix}{f.name}", type_name(tp), default, f.metadata.get("help", "")))
    return out


def type_name(tp: Any) -> str:
    """A field's type the way a user types its value: ``int``, ``one of: a|b``, ``list of int``."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of: " + "|".join(map(str, typing.get_args(tp)))
    if origin is tuple:
        return f"list of {type_name(typing.get_args(tp)[0])}"
    if origin in (dict, collections.abc.Mapping):
        return "mapping"
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if args and len(args) < len(typing.get_args(tp)):  # Optional[X]
        return f"{type_name(args[0])} or null"
    return {str: "text", int: "int", float: "float", bool: "bool"}.get(tp, getattr(tp, "__name__", str(tp)))


def all_keys() -> list[str]:
    """Every dotted key of the schema (shell completion of overrides)."""
    out = [f.name for f in dataclasses.fields(Config) if not dataclasses.is_dataclass(_hints(Config)[f.name])]
    for name in section_names():
        out += [f.key for f in _fields_of(_hints(Config)[name], f"{name}.")]
    return out


def value_choices(key: str) -> list[str]:
    """The values a dotted key allows when they are few (a Literal's choices, true/false), else []."""
    cls: Any = Config
    tp: Any = None
    for part in key.split("."):
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)) or part not in _hints(cls):
            return []
        tp = cls = _hints(cls)[part]
    if typing.get_origin(tp) is Literal:
        return [str(c) for c in typing.get_args(tp)]
    return ["true", "false"] if tp is bool else []
