"""models.model_levels: the one 'which levels does this model have' lookup."""

import types

import pytest

from matta_rec.models import ModelConfig, model_levels


def test_reads_the_levels_attribute_first():
    model = types.SimpleNamespace(levels=["student", "medium", "ta"],
                                  config=ModelConfig(levels=("student",), width_factors=(1.0,),
                                                     d_model_factors=(1.0,),
                                                     extra_gau_blocks=(0,),
                                                     extra_cross_layers=(0,)))
    assert model_levels(model) == ("student", "medium", "ta")


def test_falls_back_to_the_model_config_then_to_default():
    assert model_levels(types.SimpleNamespace(config=ModelConfig())) == ("student", "ta")
    assert model_levels(object()) is None
    assert model_levels(object(), default=["student"]) == ("student",)
    # An empty sequence says nothing either.
    assert model_levels(types.SimpleNamespace(levels=()), default=("ta",)) == ("ta",)


@pytest.mark.parametrize("levels", ["student", 3, ["student", ""], [None]])
def test_rejects_levels_that_are_not_names(levels):
    with pytest.raises(TypeError, match="sequence of level names"):
        model_levels(types.SimpleNamespace(levels=levels))


def test_does_not_swallow_unrelated_errors():
    class Broken:
        @property
        def levels(self):
            raise RuntimeError("checkpoint unreadable")

    with pytest.raises(RuntimeError, match="checkpoint unreadable"):
        model_levels(Broken(), default=("student", "ta"))


def test_nested_model_and_trainer_agree(tmp_path):
    from nested_testlib import make_schema, make_stats, tiny_config

    from matta_rec.models import NestedRelevanceModel
    from matta_rec.training.trainer import MatTATrainer

    schema = make_schema()
    model = NestedRelevanceModel(schema, make_stats(schema), tiny_config())
    assert model_levels(model) == ("student", "ta")
    assert model_levels(MatTATrainer(model)) == ("student", "ta")
