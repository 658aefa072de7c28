"""Synthetic data: persons and their register entries (_identity, names from _names),
careers and monthly resources (_records), the noise model of declared identities (_noise), in
independent seeded blocks (_generate), with their truth (_truth) and a job file (_jobfile);
monthly increments of a dataset (_increment: register changes and the month's rows) and the
union of a base and its increments (_union)."""

from nirlink.kernels._lazy import lazy_front

_LAZY = {
    "._generate": ("synth", "generate_block", "CAREER_SCHEMA", "RESOURCE_SCHEMA", "TRUTH_SCHEMA"),
    "._identity": ("REGISTER_SCHEMA",),
    "._params": ("NoiseRates", "SynthParams"),
    "._truth": ("attach_truth",),
    "._jobfile": ("write_job_file",),
    "._increment": ("increment",),
    "._increment_register": ("IncrementRates",),
    "._union": ("union",),
}

__all__ = [name for names in _LAZY.values() for name in names]

__getattr__, __dir__ = lazy_front(__name__, _LAZY)
