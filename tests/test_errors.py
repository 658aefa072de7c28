import pickle

import pytest

import nirlink.engine as engine
import nirlink.kernels as kernels
from nirlink.kernels import (
    ClusterError,
    InputError,
    InputFileError,
    JobCancelled,
    JobError,
    ModelError,
    NirlinkError,
    ReferenceDataError,
    SchemaError,
    SpecError,
    StageError,
)

CATEGORIES = [
    (SpecError, ValueError),
    (SchemaError, ValueError),
    (InputError, ValueError),
    (InputFileError, OSError),
    (ReferenceDataError, LookupError),
    (ModelError, ValueError),
    (ClusterError, ConnectionError),
    (JobError, RuntimeError),
    (StageError, RuntimeError),
    (JobCancelled, RuntimeError),
]


@pytest.mark.parametrize("cls,builtin", CATEGORIES)
def test_categories_subclass_root_and_builtin(cls, builtin):
    assert issubclass(cls, NirlinkError)
    assert issubclass(cls, builtin)
    with pytest.raises(builtin):
        raise cls("x") if cls is not SpecError else cls([("a.b", "bad")])


@pytest.mark.parametrize("cls,builtin", CATEGORIES)
def test_errors_pickle_round_trip(cls, builtin):
    err = cls([("inputs.career.path", "missing file"), ("cluster.workers", "expected integer")], source="job.toml") \
        if cls is SpecError else cls("something went wrong: 1990")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls
    assert str(back) == str(err)
    if cls is SpecError:
        assert back.errors == err.errors and back.source == "job.toml"


def test_spec_error_lists_every_problem_with_its_path():
    err = SpecError([("inputs.career.path", "file not found"), ("linkage.threshold", "must be within [0, 1]")],
                    source="job.toml")
    text = str(err)
    assert text.startswith("job.toml: 2 errors")
    assert "inputs.career.path: file not found" in text
    assert "linkage.threshold: must be within [0, 1]" in text


def test_engine_reexports_the_same_classes():
    assert engine.NirlinkError is kernels.NirlinkError
    assert engine.SpecError is kernels.SpecError
