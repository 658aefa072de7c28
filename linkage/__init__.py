"""nirlink linkage: identity normalisation and signatures, the NIR rules, the Splink models,
training, distributed scoring, clustering, evaluation."""

from ._config import LinkConfig
from ._model import Blocking, Comparison, Level, ModelSpec, identity_model, load_model, register_model, save_model

__all__ = ["Blocking", "Comparison", "Level", "LinkConfig", "ModelSpec", "identity_model", "load_model",
           "register_model", "save_model"]
