"""One config path: ``conf/`` → :func:`load_config` → one frozen, validated :class:`Config`.

A pipeline file ``conf/pipeline/NAME.yaml`` names a file per config group in ``defaults``
(``data: fashion_mnist`` reads ``conf/data/fashion_mnist.yaml``) and may override any key below
that. The command line then selects groups (``model=resnet20``) and sets dotted keys
(``train.epochs=3``)::

    from pipelines.config import load_config
    cfg = load_config("quickstart", ["model=resnet20", "train.epochs=3"])
    cfg.train.epochs  # 3

Every field below carries its help text; ``visionray show`` prints the resolved values. A bad key
or value raises :class:`ConfigError` with one sentence naming the key and what is allowed.

The package: :mod:`.base` (conf/ location, groups, ConfigError), :mod:`.schema` (the shared sections
and the root Config), :mod:`.sections` and :mod:`.rl` (each pipeline's own section), :mod:`.load`
(composing, overriding, validating, dumping).
"""

from pipelines.config.base import CONF_DIR, GROUPS, ConfigError, available

# _assign, _group_file and _read_yaml: pipelines.flows.search_space applies sampled values through them
from pipelines.config.load import (  # noqa: F401
    _assign,
    _group_file,
    _read_yaml,
    build,
    describe_pipelines,
    dump,
    flatten,
    load_config,
    model_config,
    parse_overrides,
)
from pipelines.config.rl import (
    DQNOptions,
    PPOOptions,
    ReinforceOptions,
    RLAlgo,
    RLConfig,
)
from pipelines.config.schema import (
    AugmentConfig,
    ClusterConfig,
    Config,
    DataConfig,
    DatasetName,
    ModelConfig,
    ModelName,
    OptimizerName,
    Precision,
    RegistryConfig,
    ScheduleName,
    TrackingConfig,
    TrainConfig,
)
from pipelines.config.sections import (
    ENSEMBLE_SOURCES,
    SPACE_DISTRIBUTIONS,
    BenchConfig,
    CompressConfig,
    CompressMethod,
    EnsembleConfig,
    KnnConfig,
    RetrainConfig,
    TransferConfig,
    TuneConfig,
    ZooConfig,
)

__all__ = [
    "CONF_DIR",
    "ENSEMBLE_SOURCES",
    "GROUPS",
    "SPACE_DISTRIBUTIONS",
    "AugmentConfig",
    "BenchConfig",
    "ClusterConfig",
    "CompressConfig",
    "CompressMethod",
    "Config",
    "ConfigError",
    "DQNOptions",
    "DataConfig",
    "DatasetName",
    "EnsembleConfig",
    "KnnConfig",
    "ModelConfig",
    "ModelName",
    "OptimizerName",
    "PPOOptions",
    "Precision",
    "RLAlgo",
    "RLConfig",
    "RegistryConfig",
    "ReinforceOptions",
    "RetrainConfig",
    "ScheduleName",
    "TrackingConfig",
    "TrainConfig",
    "TransferConfig",
    "TuneConfig",
    "ZooConfig",
    "available",
    "build",
    "describe_pipelines",
    "dump",
    "flatten",
    "load_config",
    "model_config",
    "parse_overrides",
]
