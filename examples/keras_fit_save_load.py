"""Keras ``model.fit`` with an ``frlr.keras`` loss, then save the model and load it back.

The losses are registered Keras serialisables (package "frlr"), so a ``.keras`` file keeps the
loss and its hyper-parameters and ``keras.saving.load_model`` restores them with no
``custom_objects``: the loaded model can go on training with the same SS-LR. Any Keras 3
backend works; choose it before Keras is imported:

    KERAS_BACKEND=tensorflow python examples/keras_fit_save_load.py   # or jax, torch
    KERAS_BACKEND=torch python examples/keras_fit_save_load.py --tiny  # one epoch, as CI runs it
"""

import argparse
import os
import tempfile

import keras
import numpy as np
from sklearn.datasets import load_digits

import frlr.keras as frlr


def main() -> None:
    parser = argparse.ArgumentParser(description="Keras fit, save and load with SS-LR.")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--tiny", action="store_true", help="one epoch (CI)")
    args = parser.parse_args()
    digits = load_digits()
    x, y = (digits.data / 16).astype("float32"), digits.target.astype("int64")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10)]
    )  # the last layer returns logits: frlr losses take logits, like from_logits=True
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss=frlr.SSLRLoss(beta=10.0, r=2.0),  # y_true: class indices (or multi-hot)
        metrics=["sparse_categorical_accuracy"],
    )
    epochs = 1 if args.tiny else args.epochs
    model.fit(x[:1400], y[:1400], batch_size=64, epochs=epochs, verbose=0)

    path = os.path.join(tempfile.mkdtemp(), "digits_sslr.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects needed
    config = loaded.loss.get_config()
    print(f"loaded loss: {type(loaded.loss).__name__}(beta={config['beta']}, r={config['r']})")
    same = np.allclose(model.predict(x[1400:], verbose=0), loaded.predict(x[1400:], verbose=0))
    print(f"same predictions after loading: {same}")
    _, accuracy = loaded.evaluate(x[1400:], y[1400:], verbose=0)
    print(f"test accuracy: {accuracy:.3f}")
    loaded.fit(x[:1400], y[:1400], batch_size=64, epochs=1, verbose=0)  # training resumes


if __name__ == "__main__":
    main()
