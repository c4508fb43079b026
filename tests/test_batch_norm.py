"""training.batch_norm: moving statistics re-estimated as the plain average over batches."""

import keras
import numpy as np

from models import build_flow_estimator
from training.batch_norm import batch_norm_layers, reestimate_batch_norm


def _small_net():
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="bn")(x)
    return keras.Model(inputs, keras.layers.ReLU()(x))


def test_statistics_become_the_average_of_the_batches():
    model = _small_net()
    rng = np.random.default_rng(0)
    batches = [rng.normal(k, 1.0 + k, (2, 9, 11, 3)).astype("float32") for k in range(3)]
    trained = [v.numpy().copy() for v in model.trainable_weights]  # conv kernel, bias, gamma, beta
    used = reestimate_batch_norm(model, [(b, None) for b in batches])
    assert used == 3
    features = [keras.ops.convert_to_numpy(model.get_layer("conv")(b)) for b in batches]
    bn = model.get_layer("bn")
    expected_mean = np.mean([f.mean(axis=(0, 1, 2)) for f in features], axis=0)
    expected_var = np.mean([f.var(axis=(0, 1, 2)) for f in features], axis=0)
    np.testing.assert_allclose(bn.moving_mean.numpy(), expected_mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), expected_var, rtol=1e-4, atol=1e-5)
    assert bn.momentum == 0.9  # restored
    for before, variable in zip(trained, model.trainable_weights, strict=True):
        np.testing.assert_array_equal(before, variable.numpy())


def test_sen_layers_are_found_and_a_model_without_batch_norm_is_left_alone():
    sen = build_flow_estimator("sen", num_stacks=1, width_divisor=16)
    sen.build((None, None, None, 3))
    assert len(batch_norm_layers(sen)) > 10
    plain = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(2, 3)])
    assert reestimate_batch_norm(plain, [np.zeros((1, 8, 8, 3), "float32")]) == 0


class _StepWithBatchNorm:
    def __init__(self):
        self.inference_model = _small_net()


def test_trainer_refreshes_once_per_step_from_an_epoch_it_never_trains_on(tmp_path):
    import tensorflow as tf

    from training.loop import BN_REFRESH_EPOCH, LoopConfig, Trainer

    rng = np.random.default_rng(1)
    batches = rng.normal(0.5, 2.0, (3, 2, 8, 8, 3)).astype("float32")
    epochs = []

    def make_epoch_dataset(epoch):
        epochs.append(epoch)
        return tf.data.Dataset.from_tensor_slices((batches, batches))

    config = LoopConfig(run_dir=str(tmp_path), steps_per_epoch=1, bn_refresh_batches=2)
    trainer = Trainer(_StepWithBatchNorm(), make_epoch_dataset, config)
    model = trainer.step_obj.inference_model
    trainer._refresh_batch_norm()
    trainer._refresh_batch_norm()  # the same step: not again
    assert epochs == [BN_REFRESH_EPOCH]
    features = [keras.ops.convert_to_numpy(model.get_layer("conv")(b)) for b in batches[:2]]
    expected = np.mean([f.mean(axis=(0, 1, 2)) for f in features], axis=0)
    moving = model.get_layer("bn").moving_mean.numpy()
    np.testing.assert_allclose(moving, expected, rtol=1e-5, atol=1e-5)
