"""Test-suite setup: quiet TensorFlow, two logical CPU devices, fixed seeds.

Two logical CPU devices are configured before TensorFlow initialises so that
MirroredStrategy tests can run on one CPU machine.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

import pytest  # noqa: E402


def _configure_tf():
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0],
            [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
        )
    except RuntimeError:
        # Already initialised (e.g. a plugin imported TF first): keep going,
        # multi-device tests check the device count themselves.
        pass


_configure_tf()


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture
def mirrored_strategy():
    """The process-wide MirroredStrategy over the two logical CPUs.

    Tests share the one that ``matta_rec.training`` caches: two
    MirroredStrategy objects in one process collide on collective-op keys.
    """
    import tensorflow as tf

    from matta_rec.training.distribute import make_strategy

    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.skip("needs two logical CPU devices (tests/conftest.py)")
    return make_strategy("mirrored")
