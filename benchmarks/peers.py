"""The same patch sweep through TransformerLens, nnsight and pyvene beside actbridge's engine.

    python benchmarks/peers.py [--models pythia-160m micro] [--conditions 12 48] [--examples 4]
                               [--threads 1 2] [--layer-fraction 0.5]

One sweep: K edit conditions (the mix of none / add / add_rescaled / replace / replace_rescaled /
interpolate, cycled) at the last token of the pipeline's compact 2-hop prompts (about 48 tokens), each
scored on 4 candidate answers (summed log-probability of the candidate's tokens). Models, each library
loading the same local directory: a random-init Pythia-160M-shaped GPT-NeoX (saved once to a temporary
directory with the shipped micro tokenizer) and the shipped default micro receiver.

Each peer runs the sweep the way its own documentation writes it, with its batching and its prefix cache
(the prompt before the edited token runs once per example; the K x C rows continue it):

* TransformerLens 4 (``TransformerBridge.boot_transformers``): ``run_with_hooks`` with a
  ``blocks.{l}.hook_resid_pre`` hook over all K x C rows, the prefix's HF key/value cache
  (``return_type="logits_and_cache"``) repeated over the rows (``past_key_values``).
* nnsight (``LanguageModel``): one ``trace`` over the rows, the layer's input edited in place, the prefix
  cache passed through to the model.
* pyvene (``IntervenableModel``): a custom intervention on ``block_input`` at the edited position, the rows
  in one batch, the prefix cache passed through in ``base``.

actbridge: ``actbridge.models.edited_scoring.fast_scores`` (prefix once, the edited token once per condition, each
candidate's tokens but the last once per condition, logits only where a candidate token is predicted).

Prints, per model, K and thread count, the wall time per example of each library, our speed-up over it,
the ideal ratio K(T+1)/(T-1+K) of the tokens a whole-sequence sweep runs to ours (C = 1, m = 1), and the
largest |Δ gold log-prob| between each library and ours. A peer that is not installed, or cannot load the
model, is skipped with the reason; the others still run.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import traceback
from importlib import metadata
from pathlib import Path
from typing import Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import DynamicCache  # noqa: E402

from actbridge.models.edited_scoring import Edits, Example, fast_scores  # noqa: E402
from actbridge.models.cache_api import with_cache  # noqa: E402
from actbridge.models.padding import right_padded  # noqa: E402
from injection import edits_for, timed  # noqa: E402  (benchmarks/injection.py: the same conditions, cycled)

MICRO_RECEIVER = ROOT / "resources" / "models" / "4677864331655e2d"
PEERS = ("transformer_lens", "nnsight", "pyvene")
PACKAGES = {"transformer_lens": "transformer-lens", "nnsight": "nnsight", "pyvene": "pyvene"}
Sweep = Callable[[Sequence[Example], int, Sequence[Edits]], list[np.ndarray]]


def sweep_examples(tokenizer, n_examples: int, n_candidates: int = 4) -> list[Example]:
    """The pipeline's compact 2-hop prompts, each with its world's first ``n_candidates`` candidate answers."""
    from extraction import prompts

    _, table = prompts(n_examples)
    out = []
    for row in table.to_pylist():
        ids = tokenizer(row["full_prompt"], add_special_tokens=False)["input_ids"]
        names = (row["candidates"] * n_candidates)[:n_candidates]
        out.append(Example(ids, len(ids) - 1, [tokenizer(" " + n, add_special_tokens=False)["input_ids"]
                                              for n in names]))
    return out


def ours(model) -> Sweep:
    def run(examples, layer, edits):
        return [score.logprob for score in fast_scores(model, examples, layer, edits)]
    return run


def _rows(example: Example, edits: Edits):
    """(K x C rows): the last prompt token then the candidate, and each row's edit."""
    rows = [(k, c) for k in range(len(edits)) for c in range(len(example.candidates))]
    ids, mask = right_padded([[example.prompt_ids[-1], *example.candidates[c]] for _, c in rows], 0)
    keep = torch.stack([edits.keep[k] for k, _ in rows])
    vector = torch.stack([edits.vector[k] for k, _ in rows])
    norm_scaled = torch.stack([edits.norm_scaled[k] for k, _ in rows])
    return rows, ids, mask, keep, vector, norm_scaled


def _edited(h: torch.Tensor, keep, vector, norm_scaled) -> torch.Tensor:
    scale = torch.where(norm_scaled, h.norm(dim=-1), torch.ones_like(keep))
    return keep[:, None] * h + scale[:, None] * vector


def _scores(logits: torch.Tensor, example: Example, rows, k_count: int) -> np.ndarray:
    """[K, C] summed log-probs from logits [rows, 1 + m, vocab] (position j predicts the candidate's token j)."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    out = np.zeros((k_count, len(example.candidates)))
    for r, (k, c) in enumerate(rows):
        candidate = example.candidates[c]
        out[k, c] = float(logprobs[r, torch.arange(len(candidate)), torch.as_tensor(candidate)].sum())
    return out


def _prefix_cache(hf_model, example: Example, n_rows: int):
    cache = DynamicCache()
    with torch.inference_mode():
        hf_model(input_ids=torch.tensor([example.prompt_ids[:-1]]), **with_cache(hf_model, cache), use_cache=True)
    cache = copy.deepcopy(cache)
    cache.batch_repeat_interleave(n_rows)
    return cache


def transformer_lens(model_dir: Path) -> Sweep:
    from transformer_lens import TransformerBridge

    bridge = TransformerBridge.boot_transformers(str(model_dir), device="cpu", dtype=torch.float32)

    @torch.inference_mode()
    def run(examples, layer, edits):
        out = []
        for example, example_edits in zip(examples, edits):
            rows, ids, mask, keep, vector, norm_scaled = _rows(example, example_edits)
            _, cache = bridge(torch.tensor([example.prompt_ids[:-1]]), return_type="logits_and_cache")
            cache = copy.deepcopy(cache)
            cache.batch_repeat_interleave(len(rows))
            prefix = torch.ones(len(rows), len(example.prompt_ids) - 1, dtype=mask.dtype)

            def hook(resid, hook):
                resid = resid.clone()
                resid[:, 0] = _edited(resid[:, 0], keep, vector, norm_scaled)
                return resid

            logits = bridge.run_with_hooks(ids, fwd_hooks=[(f"blocks.{layer}.hook_resid_pre", hook)],
                                           # TransformerLens's own keyword: it computes positions from it
                                           past_key_values=cache, attention_mask=torch.cat([prefix, mask], 1))
            out.append(_scores(logits, example, rows, len(example_edits)))
        return out

    return run


def nnsight(model_dir: Path) -> Sweep:
    from nnsight import LanguageModel

    lm = LanguageModel(str(model_dir), device_map="cpu", dispatch=True)
    hf_model = lm._module  # the HF model nnsight wraps: its prefix cache

    def run(examples, layer, edits):
        out = []
        for example, example_edits in zip(examples, edits):
            rows, ids, mask, keep, vector, norm_scaled = _rows(example, example_edits)
            cache = _prefix_cache(hf_model, example, len(rows))
            prefix = torch.ones(len(rows), len(example.prompt_ids) - 1, dtype=mask.dtype)
            with torch.inference_mode(), lm.trace(ids, attention_mask=torch.cat([prefix, mask], 1),
                                                  **with_cache(hf_model, cache)):
                block = lm.gpt_neox.layers[layer]
                hidden = block.input.clone()
                hidden[:, 0] = _edited(hidden[:, 0], keep, vector, norm_scaled)
                block.input = hidden
                logits = lm.output.logits.save()
            out.append(_scores(logits, example, rows, len(example_edits)))
        return out

    return run


def pyvene(model_dir: Path) -> Sweep:
    import pyvene as pv
    from transformers import AutoModelForCausalLM

    hf_model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()

    class EditIntervention(pv.ConstantSourceIntervention, pv.LocalistRepresentationIntervention):
        """h' = keep h + (||h|| if norm_scaled else 1) vector, per row (set before each call)."""

        edit: tuple = ()

        def forward(self, base, source=None, subspaces=None, **kwargs):
            return _edited(base.reshape(len(base), -1), *self.edit).reshape(base.shape)  # base: [rows, 1, d]

    models = {}

    def intervenable(layer):
        if layer not in models:
            config = pv.IntervenableConfig(representations=[pv.RepresentationConfig(layer, "block_input", "pos", 1)],
                                           intervention_types=EditIntervention)
            models[layer] = pv.IntervenableModel(config, hf_model)
            models[layer].disable_model_gradients()
        return models[layer]

    @torch.inference_mode()
    def run(examples, layer, edits):
        model = intervenable(layer)
        intervention = next(iter(model.interventions.values()))
        intervention = intervention[0] if isinstance(intervention, tuple) else intervention
        out = []
        for example, example_edits in zip(examples, edits):
            rows, ids, mask, keep, vector, norm_scaled = _rows(example, example_edits)
            cache = _prefix_cache(hf_model, example, len(rows))
            prefix = torch.ones(len(rows), len(example.prompt_ids) - 1, dtype=mask.dtype)
            intervention.edit = (keep, vector, norm_scaled)
            _, outputs = model({"input_ids": ids, "attention_mask": torch.cat([prefix, mask], 1),
                                **with_cache(hf_model, cache)},
                               unit_locations={"base": [[[0]] * len(rows)]})
            out.append(_scores(outputs.logits, example, rows, len(example_edits)))
        return out

    return run


def version(peer: str) -> str:
    try:
        return metadata.version(PACKAGES[peer])
    except metadata.PackageNotFoundError:
        return "not installed"


def load_peers(model_dir: Path, wanted: Sequence[str] = PEERS) -> tuple[dict[str, Sweep], dict[str, str]]:
    """The peers that load the model, and for each of the others why not."""
    loaded, skipped = {}, {}
    for peer in wanted:
        if version(peer) == "not installed":
            skipped[peer] = f"{PACKAGES[peer]} is not installed (pip install -e '.[peers]')"
            continue
        try:
            loaded[peer] = globals()[peer](model_dir)
        except Exception as error:  # an incompatible version or a model it cannot load: say so, go on
            skipped[peer] = f"{PACKAGES[peer]} {version(peer)} could not load {model_dir}: " \
                            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return loaded, skipped


def pythia_160m_dir(directory: Path) -> Path:
    """A random-init Pythia-160M-shaped model saved with the shipped micro tokenizer (ids < its vocabulary)."""
    from transformers import AutoTokenizer

    from extraction import pythia_shaped

    model = pythia_shaped("160m")
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(MICRO_RECEIVER).save_pretrained(directory)
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["pythia-160m", "micro"])
    parser.add_argument("--conditions", nargs="+", type=int, default=[12, 48])
    parser.add_argument("--examples", type=int, default=4)
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--peers", nargs="+", default=list(PEERS))
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"torch {torch.__version__}; " + ", ".join(f"{PACKAGES[p]} {version(p)}" for p in PEERS))
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.models:
            model_dir = pythia_160m_dir(Path(scratch) / name) if name == "pythia-160m" else MICRO_RECEIVER
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
            examples = sweep_examples(tokenizer, args.examples)
            tokens = float(np.mean([len(e.prompt_ids) for e in examples]))
            layer = model.config.num_hidden_layers // 2
            peers, skipped = load_peers(model_dir, args.peers)
            for peer, why in skipped.items():
                print(f"{name}: skipped {peer}: {why}")
            sweeps = {"actbridge": ours(model), **peers}
            print(f"\n{name}: T = {tokens:.1f} tokens, 4 candidates, edit at layer {layer}, {args.examples} examples")
            print(f"{'K':>3} {'threads':>7} " + " ".join(f"{s:>18}" for s in sweeps) + "  ideal  max |Δ| vs ours")
            for k in args.conditions:
                generator = torch.Generator().manual_seed(k)
                edits = [edits_for(model.config.hidden_size, k, generator) for _ in examples]
                for threads in args.threads:
                    torch.set_num_threads(threads)
                    results = {}
                    for sweep_name, sweep in sweeps.items():
                        try:
                            seconds, scores = timed(lambda: sweep(examples, layer, edits), 1)
                            results[sweep_name] = (seconds / len(examples), scores)
                        except Exception:
                            print(f"{sweep_name} failed:\n{traceback.format_exc(limit=3)}")
                    base = results["actbridge"]
                    cells = []
                    for sweep_name in sweeps:
                        if sweep_name not in results:
                            cells.append(f"{'failed':>18}")
                        elif sweep_name == "actbridge":
                            cells.append(f"{base[0] * 1e3:>14.0f} ms")
                        else:
                            seconds = results[sweep_name][0]
                            cells.append(f"{seconds * 1e3:>8.0f} ms {seconds / base[0]:>5.1f}x")
                    gaps = {n: max(float(np.abs(a - b).max()) for a, b in zip(r[1], base[1]))
                            for n, r in results.items() if n != "actbridge"}
                    ideal = k * (tokens + 1) / (tokens - 1 + k)
                    print(f"{k:>3} {threads:>7} " + " ".join(cells) + f"  {ideal:4.1f}x  "
                          + ", ".join(f"{n} {g:.1e}" for n, g in gaps.items()))


if __name__ == "__main__":
    main()
