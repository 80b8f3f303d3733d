"""A custom layer for the custom_objects tests (not a test module)."""

import keras


class Doubler(keras.layers.Layer):
    def call(self, x):
        return x * 2.0
