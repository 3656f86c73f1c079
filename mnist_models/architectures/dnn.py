"""The study's dense network (figure 2.1): flatten, then 16, 32 and 64 ReLU units, softmax."""

import keras
from keras import layers


def build_dnn(input_shape=(28, 28, 1), num_classes=10) -> keras.Model:
    """Build the uncompiled dense network of the study's figure 2.1."""
    inputs = keras.Input(shape=input_shape, name="input_layer")
    x = layers.Flatten(name="flatten")(inputs)
    x = layers.Dense(16, activation="relu", name="dense_16")(x)
    x = layers.Dense(32, activation="relu", name="dense_32")(x)
    x = layers.Dense(64, activation="relu", name="dense_64")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="output")(x)
    return keras.Model(inputs, outputs, name="dnn")
