"""The gradient experiment's pair made deeper: `depth` residual blocks, with and without their shortcuts.

The study's pair (resnet.py) has one shortcut over three convolutions, and its conclusion is that the
network is too shallow for gradients to vanish on MNIST. This pair keeps the study's first layer,
`target_layer` (3x3, 32 filters, the layer whose gradient is watched), pools to 14x14, and stacks `depth`
blocks of two 3x3 convolutions of 32 filters; each block of the residual network adds its input back
(an identity shortcut), the plain network's blocks do not. No batch normalisation, as in the study, so
nothing but the shortcut carries the gradient past the blocks.
"""

import keras
from keras import layers


def _build(input_shape, num_classes, depth: int, shortcut: bool, name: str) -> keras.Model:
    if depth < 1:
        raise ValueError(f"invalid depth {depth}; expected at least 1 block")
    inputs = keras.Input(shape=input_shape, name="input_layer")
    x = layers.Conv2D(32, (3, 3), activation="relu", padding="same", name="target_layer")(inputs)
    x = layers.MaxPooling2D((2, 2), padding="same", name="pool_1")(x)
    for block in range(1, depth + 1):
        y = layers.Conv2D(32, (3, 3), activation="relu", padding="same", name=f"block_{block}_conv_1")(x)
        y = layers.Conv2D(32, (3, 3), padding="same", name=f"block_{block}_conv_2")(y)
        if shortcut:
            y = layers.Add(name=f"block_{block}_add")([x, y])
        x = layers.Activation("relu", name=f"block_{block}_relu")(y)
    x = layers.MaxPooling2D((2, 2), padding="same", name="pool_2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", name="dense_128")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="output")(x)
    return keras.Model(inputs, outputs, name=name)


def build_deep_resnet(input_shape=(28, 28, 1), num_classes=10, depth: int = 4) -> keras.Model:
    """Build the uncompiled residual network of `depth` blocks, each with its identity shortcut."""
    return _build(input_shape, num_classes, depth, shortcut=True, name=f"resnet_deep{depth}")


def build_deep_plain(input_shape=(28, 28, 1), num_classes=10, depth: int = 4) -> keras.Model:
    """Build the same network without its shortcuts: the gradient-vanishing control at `depth` blocks."""
    return _build(input_shape, num_classes, depth, shortcut=False, name=f"resnet_plain_deep{depth}")
