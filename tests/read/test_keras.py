"""model.fit streams a built dataset through tfds.load."""

import keras
import numpy as np
import tensorflow_datasets as tfds


def test_model_fit_learns_from_the_stream(small_dataset):
    keras.utils.set_random_seed(0)
    load = dict(data_dir=small_dataset["data_dir"], as_supervised=True, batch_size=64)
    train = tfds.load("small", split="train", shuffle_files=True, **load)
    val = tfds.load("small", split="validation", shuffle_files=False, **load)
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(
        train,
        validation_data=val,
        epochs=8,
        verbose=0,
        callbacks=[keras.callbacks.EarlyStopping(patience=2, restore_best_weights=True)],
    )
    # The label is sign(sum(x)): a linear rule the model must find.
    assert max(history.history["val_accuracy"]) > 0.9
    assert len(history.history["loss"]) >= 2
    assert history.history["loss"][-1] < history.history["loss"][0]
    preds = np.argmax(model.predict(val, verbose=0), axis=1)
    assert preds.shape == (500,)
