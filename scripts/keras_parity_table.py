"""Print how far dnnlab's weights end from Keras 3's, per technique and parity (markdown).

    pip install -e '.[parity]'
    OMP_NUM_THREADS=1 python scripts/keras_parity_table.py

Each row trains the same small network in Keras (PyTorch backend) and in dnnlab under
``parity=keras`` and ``parity=pytorch`` (tests/keras_parity.py, which
tests/optim/test_keras_parity.py uses for the proof) and prints the largest relative difference of
what training changed.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

import keras_parity  # noqa: E402


def main() -> None:
    results = []
    for case in keras_parity.CASES:
        results.append(keras_parity.measure(case))
        print(f"measured {case.name}", file=sys.stderr, flush=True)
    print(keras_parity.table(results))


if __name__ == "__main__":
    main()
