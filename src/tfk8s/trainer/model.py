"""The workshop's convolutional network for MNIST, and its input augmentation.

The model takes raw pixel values (0 to 255, white digit on black, as read from
a PNG) and rescales them itself, so a client never has to know the training
scale.
"""
import math

import tensorflow as tf
import tf_keras as keras


def build_model(hidden_layers=2, dropout=0.4):
    """`hidden_layers` blocks of 5x5 conv (32 filters), batch norm, ReLU, 2x2 max-pool; dense 1024; 10 logits."""
    layers = [keras.Input(shape=(28, 28, 1), name="image"), keras.layers.Rescaling(1.0 / 255)]
    for i in range(hidden_layers):
        layers += [
            keras.layers.Conv2D(32, 5, padding="same", use_bias=False, name=f"conv{i + 1}"),
            keras.layers.BatchNormalization(name=f"batch_norm{i + 1}"),
            keras.layers.ReLU(),
            keras.layers.MaxPooling2D(2, padding="same"),
        ]
    layers += [
        keras.layers.Flatten(),
        keras.layers.Dense(1024, activation="relu", name="dense"),
        keras.layers.Dropout(dropout),
        keras.layers.Dense(10, name="logits"),
    ]
    return keras.Sequential(layers, name=f"mnist_cnn_{hidden_layers}")


def augment(images, max_degrees=10.0, max_shift=2.0, max_zoom=0.1):
    """Randomly rotate, zoom and shift a batch of [n, 28, 28, 1] images (one affine warp each).

    Handwriting varies in slant, size and position; showing the network those
    variations is what lets a 5,000-image training set generalise.
    """
    n = tf.shape(images)[0]
    angle = tf.random.uniform([n], -max_degrees, max_degrees) * math.pi / 180
    scale = tf.random.uniform([n], 1 - max_zoom, 1 + max_zoom)
    shift = tf.random.uniform([n, 2], -max_shift, max_shift)
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    centre = 13.5
    # Output pixel (x, y) samples input (a0 x + a1 y + a2, b0 x + b1 y + b2): rotation and zoom about the centre.
    a2 = centre - cos * centre + sin * centre - shift[:, 0]
    b2 = centre - sin * centre - cos * centre - shift[:, 1]
    zeros = tf.zeros([n])
    transforms = tf.stack([cos, -sin, a2, sin, cos, b2, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=[28, 28], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")


def make_optimizer(learning_rate, steps):
    """SGD with Nesterov momentum, and its schedule: a linear warm-up, then a cosine decay to 0.

    The warm-up (a tenth of the run, at most 200 steps) keeps the first steps, taken
    before batch norm has settled, from throwing a short run off course.
    """
    warmup = min(200, steps // 10)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(steps - warmup, 1), warmup_target=learning_rate, warmup_steps=warmup)
    return keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True), schedule
