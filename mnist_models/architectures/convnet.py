"""The study's ConvNet (figure 2.2), with MNIST's single input channel."""

import keras
from keras import layers


def build_convnet(input_shape=(28, 28, 1), num_classes=10) -> keras.Model:
    """Build the uncompiled ConvNet of the study's figure 2.2."""
    inputs = keras.Input(shape=input_shape, name="input_layer")
    x = layers.Conv2D(32, (3, 3), activation="relu", name="conv_1")(inputs)
    x = layers.MaxPooling2D((2, 2), name="pool_1")(x)
    x = layers.Conv2D(64, (3, 3), activation="relu", name="conv_2")(x)
    x = layers.MaxPooling2D((2, 2), name="pool_2")(x)
    x = layers.Conv2D(64, (3, 3), activation="relu", name="conv_3")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(64, activation="relu", name="dense_64")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="output")(x)
    return keras.Model(inputs, outputs, name="convnet")
