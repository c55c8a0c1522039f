"""Issue 13: the test-split figures of a tiny model (README's "The built-in model" table).

    PYTHONPATH=src python notes/experiments/tiny_figures.py [MODEL] > runs/tiny_figures.json

MODEL: ``tiny`` (the shipped model, default) or a rebuild's name/path. Passkey prompts use seed 1 (seed 0 is what
the build's marker and every choice used); bits per character are on 20 test-split spans of 600 characters.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from tiny_curriculum import UNTRAINED  # noqa: E402

from longrope.data.corpus import StdlibCorpus  # noqa: E402
from longrope.eval.bits_per_char import span_bits_per_char  # noqa: E402
from longrope.eval.passkey import accuracy_by_length, passkey_trials  # noqa: E402
from longrope.models.loading import load_model  # noqa: E402


def passkey(model, tokenizer, template, trials: int, length: int = 256) -> dict:
    found = passkey_trials(model, tokenizer, [length], trials, seed=1, template=template, progress=False)
    return {"accuracy": accuracy_by_length(found)[length], "trials": trials,
            "missed": [t.output for t in found if not t.correct][:5]}


def main(name: str = "tiny") -> None:
    model, tokenizer = load_model(name)
    model.eval()
    figures = {"model": name,
               "bits_per_char_test_600x20": span_bits_per_char(model, tokenizer, StdlibCorpus("test"), 600, 20),
               "passkey_256_code": passkey(model, tokenizer, "code", 40),
               "passkey_256_natural": passkey(model, tokenizer, "natural", 40),
               "passkey_2048_code_no_scaling": passkey(model, tokenizer, "code", 20, 2048)}
    for label, template in UNTRAINED.items():
        figures[f"passkey_256_{label}"] = passkey(model, tokenizer, template, 40 if label == "dict" else 20)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])
