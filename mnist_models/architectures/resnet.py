"""The study's small ResNet (figure 2.6) and the same network without its shortcut.

The pair is the study's gradient-vanishing experiment: `target_layer`, the first convolution,
is the layer whose kernel is tracked, with and without the 1x1 stride-4 shortcut.
"""

import keras
from keras import layers


def _build(input_shape, num_classes, shortcut: bool, name: str) -> keras.Model:
    inputs = keras.Input(shape=input_shape, name="input_layer")
    l1 = layers.Conv2D(32, (3, 3), activation="relu", padding="same", name="target_layer")(inputs)
    l2 = layers.MaxPooling2D((2, 2), padding="same", name="pool_1")(l1)
    l3 = layers.Conv2D(64, (3, 3), activation="relu", padding="same", name="conv_2")(l2)
    l4 = layers.MaxPooling2D((2, 2), padding="same", name="pool_2")(l3)
    l5 = layers.Conv2D(64, (3, 3), activation="relu", padding="same", name="conv_3")(l4)
    l6 = layers.MaxPooling2D((2, 2), padding="same", name="pool_3")(l5)
    l7 = layers.Conv2D(128, (3, 3), activation="relu", padding="same", name="conv_4")(l6)
    if shortcut:
        # Three 2x2 poolings shrink 14x14 to 4x4 (padding "same"), so the shortcut strides by 4.
        shortcut_branch = layers.Conv2D(
            128, (1, 1), activation="relu", strides=(4, 4), padding="same", name="shortcut"
        )(l2)
        l7 = layers.Add(name="add")([l7, shortcut_branch])
    l9 = layers.Conv2D(128, (3, 3), activation="relu", padding="same", name="conv_5")(l7)
    l10 = layers.MaxPooling2D((2, 2), padding="same", name="pool_4")(l9)
    l11 = layers.Flatten(name="flatten")(l10)
    l12 = layers.Dense(128, activation="relu", name="dense_128")(l11)
    outputs = layers.Dense(num_classes, activation="softmax", name="output")(l12)
    return keras.Model(inputs, outputs, name=name)


def build_resnet(input_shape=(28, 28, 1), num_classes=10) -> keras.Model:
    """Build the uncompiled residual network of the study's figure 2.6."""
    return _build(input_shape, num_classes, shortcut=True, name="resnet")


def build_resnet_plain(input_shape=(28, 28, 1), num_classes=10) -> keras.Model:
    """Build figure 2.6's network without the shortcut: the gradient-vanishing control."""
    return _build(input_shape, num_classes, shortcut=False, name="resnet_plain")
