"""Issue 13, small experiment: does a retrieval curriculum with quoted string keys make the shipped tiny model
retrieve from the held-out dict literal? Continues training the shipped model for a few hundred steps with one
pairing (control: ``mixed``, the shipped recipe's; candidate: ``mixed_keys``) and measures in-window passkey
accuracy (256 tokens, 20 trials, seed 0: validation prompts) on the code template, the held-out dict template
and three formats no pairing trains.

    PYTHONPATH=src python notes/experiments/tiny_curriculum.py mixed_keys 300 runs/tiny_curriculum
"""

import json
import random
import sys
import time
from pathlib import Path

import torch

from longrope.data.corpus import StdlibCorpus
from longrope.data.retrieval import identifier_pool, retrieval_window
from longrope.eval.passkey import CODE, PasskeyTemplate, accuracy_by_length, passkey_trials
from longrope.recipes.tiny import _random_windows, _token_stream, load_tiny

UNTRAINED = {
    "dict": "dict",
    "class_attribute": PasskeyTemplate("class_attribute", CODE.instruction, CODE.filler,
                                       "class Settings:\n    pass_key = {key}\n", "assert Settings.pass_key =="),
    "dict_call": PasskeyTemplate("dict_call", CODE.instruction, CODE.filler,
                                 "SETTINGS = dict(pass_key={key})\n", 'assert SETTINGS["pass_key"] =='),
    "tuple_unpacking": PasskeyTemplate("tuple_unpacking", CODE.instruction, CODE.filler,
                                       "name, pass_key = 'x', {key}\n", "assert pass_key =="),
}


def measure(model, tokenizer, trials=20):
    model.eval()
    out = {}
    for name, template in {"code": "code", **UNTRAINED}.items():
        t = passkey_trials(model, tokenizer, [256], trials, seed=0, template=template, progress=False)
        out[name] = accuracy_by_length(t)[256]
    model.train()
    return out


def main(pairing: str, steps: int, out: Path) -> None:
    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_tiny()
    model = model.float()
    documents = list(StdlibCorpus("train").documents())
    stream = torch.from_numpy(_token_stream(tokenizer, documents))
    names = identifier_pool(d.text for d in documents)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    generator = torch.Generator().manual_seed(1)
    rng = random.Random(1)
    log = {"pairing": pairing, "steps": steps, "measures": {0: measure(model, tokenizer)}}
    print(0, log["measures"][0], flush=True)
    started = time.perf_counter()
    model.train()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = 1e-3 * min(1.0, (step + 1) / 20)
        batch = _random_windows(stream, 32, 256, tokenizer.bos_token_id, generator)
        for row in range(round(32 * 0.35)):
            batch[row] = retrieval_window(stream, 256, tokenizer, names, rng, pairing, (5,))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=batch, labels=batch, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % 100 == 0:
            log["measures"][step + 1] = m = measure(model, tokenizer)
            print(step + 1, f"loss {loss.item():.3f}", m, f"{time.perf_counter() - started:.0f}s", flush=True)
    log["seconds"] = round(time.perf_counter() - started, 1)
    (out / f"{pairing}.json").write_text(json.dumps(log, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))
