"""The README's example runs as written (offline), with fewer epochs."""

import keras

from tests.helpers import readme_example


def test_readme_example_runs_offline(tmp_path):
    namespace = readme_example.run(epochs=2, directory=str(tmp_path))
    small = namespace["small"]
    assert isinstance(small, keras.Model)
    assert not any("Gate" in type(layer).__name__ for layer in small.layers)
    assert (tmp_path / "saved_models" / "example" / "report.json").exists()
