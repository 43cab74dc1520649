"""flowzoo: few-step generative models as presets of one alpha-parameterised objective.

The Python API (README, "Python API"); each name imports its module on first use, so ``import flowzoo``
stays light:

    flowzoo.create_objective(name, net, total_steps=None, **overrides)  # a preset around your own network
    flowzoo.run(config, out=...) -> Run        # train and evaluate from a config mapping, as `flowzoo run`
    flowzoo.load_run(path) -> Run              # a run back: .net .dataset .config .result, .sample(nfe, labels=...)
    flowzoo.create_metric(name, seed=0)        # metric(samples, labels, dataset) -> {key: value}
    flowzoo.create_backbone(name, **kw), flowzoo.create_dataset(name, **kw)
"""

__version__ = "0.1.0"

_LAZY = {
    "run": "flowzoo.api",
    "load_run": "flowzoo.api",
    "Run": "flowzoo.api",
    "create_objective": "flowzoo.objectives",
    "create_backbone": "flowzoo.backbones",
    "create_dataset": "flowzoo.data",
    "create_metric": "flowzoo.eval",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value  # once imported, a plain attribute
        return value
    raise AttributeError(f"module 'flowzoo' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY})
