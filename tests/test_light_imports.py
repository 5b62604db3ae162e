"""Config validation stays cheap: it never imports Keras or TensorFlow."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHECK = """
import sys
{code}
heavy = sorted(m for m in ("tensorflow", "keras") if m in sys.modules)
assert not heavy, f"imported {{heavy}}"
"""


@pytest.mark.parametrize(
    "code",
    [
        # The import the issue names, and what it is for: validating a run config,
        # model section included.
        "import matta_rec.training.config",
        "from matta_rec.training.config import RunConfig\n"
        "config = RunConfig.from_dict({'model': {'d_model': 4, 'mlp_units': [8]}})\n"
        "assert config.model_for_mode().d_model == 4",
        # The models package itself: configs, sub-model descriptions, levels.
        "from matta_rec.models import ModelConfig, SubmodelSpec, model_levels, submodel_family\n"
        "arch = ModelConfig().architecture()\n"
        "features = [{'name': 'a', 'kind': 'numeric', 'group': 'user'}]\n"
        "assert [i.name for i in submodel_family(arch, features)][:2] == ['student', 'ta']\n"
        "assert SubmodelSpec.parse('wnw:2').name == 'wnw:2'",
    ],
)
def test_config_and_model_descriptions_import_without_keras(code):
    result = subprocess.run(
        [sys.executable, "-c", CHECK.format(code=code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_models_still_import_keras_classes_on_first_use():
    code = (
        "import sys\n"
        "import matta_rec.models as models\n"
        "assert 'keras' not in sys.modules\n"
        "assert models.NestedRelevanceModel.__module__ == 'matta_rec.models.relevance'\n"
        "assert 'keras' in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
