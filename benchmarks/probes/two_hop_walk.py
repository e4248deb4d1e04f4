"""From Guo et al.'s in-context two-hop task to ours, one change at a time: where does the plateau break?

    python benchmarks/probes/two_hop_walk.py NAME --variant guo [--steps N] [--batch B] [--threads T]

Guo et al. 2025 ("How Do Transformers Perform Two-Hop Reasoning in Context?", arXiv 2502.13913) train a
3-layer x 256, 1-head transformer whose accuracy sits at uniform guessing among chain ends for hundreds of
steps and then jumps to ~1.0. Their data, as their code (``src/two_hop_data.py``, ``two_hop_format``) draws it,
not as a one-line summary of it: every sequence holds 11 bare ``a b`` edges, of which ``k`` (uniform in 1..4)
two-hop chains, each chain's first edge placed before its second, and ``11 - 2k`` one-hop noise edges;
then the start of one chain and, as the only supervised token, its end. A quarter of the sequences have a
single chain, which its end answers without any look-up: the task carries its own curriculum.

Variants (each the previous one plus one change; ``--variant`` names one):

* ``guo``: the above, 30 entity tokens, no query token. ``--model guo`` builds the network as their
  ``model.py`` does (read from the compiled module their repository ships: pre-norm blocks, learned positions,
  an untied output layer, PyTorch's default initialisation, embeddings N(0, 1)) instead of transformers'
  GPT-2 (the same blocks, the output tied to the embedding, everything N(0, 0.02)).
* ``names``: entities drawn from this project's 784 names (``actbridge.data.worlds.name_pool``), one token each.
* ``relations``: every edge carries one of the 6 relation words (``a r b``), the query names the start and both
  relations (``Q a r1 r2``); a chain's relations are drawn at random, so the relation words decide nothing
  yet that the start does not.
* ``shuffled``: the facts in any order (a chain's second edge may come first), as in our prompts.
* ``fixed``: always 1 target and 3 distractor chains, no noise edges (our eval's shape).
* ``balanced``: ``fixed`` with our balanced distractors (a branch from the subject, a fresh chain with the
  question's relations, an unrelated chain): neither the subject nor the relations alone find the answer.
* ``balanced_mix``: ``balanced`` plus, in half of the sequences, a 1-hop question about a random fact.
* ``curriculum``: ``balanced_mix`` in which a quarter of the worlds have no distractor chain (as Guo et al.'s
  single-chain quarter), the held-out worlds all of them.

Every ``--every`` steps it prints held-out accuracy (arg-max over the entity tokens) on 1,000 sequences
drawn like the training ones but at full difficulty (4 chains), split by hop count, and the chance level
(one over the chain ends). Results: docs/findings.md ("Learning to compose").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from actbridge.data.worlds import RELATIONS, name_pool  # noqa: E402

VARIANTS = ("guo", "names", "relations", "shuffled", "fixed", "balanced", "balanced_mix", "curriculum")
EDGES = 11  # Guo et al.'s seq_len 24 without BOS: (24 - 2) // 2 edges
MAX_CHAINS = 4
PAD, QUERY = 0, 1
SPECIAL = 2


class Task:
    """Draws sequences of one variant as token ids: specials, then relations, then entities."""

    def __init__(self, variant: str) -> None:
        self.variant = variant
        self.level = VARIANTS.index(variant)
        self.n_entities = 30 if variant == "guo" else len(name_pool())
        self.n_relations = len(RELATIONS) if self.level >= VARIANTS.index("relations") else 0
        self.entity0 = SPECIAL + self.n_relations
        self.vocab = self.entity0 + self.n_entities

    def relation(self, r: int) -> int:
        return SPECIAL + r

    def sequence(self, rng: np.random.Generator, *, hard: bool) -> tuple[list[int], int, int, int]:
        """(tokens, index of the token that predicts the answer, answer id, hops asked)."""
        level, relations = self.level, self.n_relations > 0
        mix = level >= VARIANTS.index("balanced_mix")
        if level >= VARIANTS.index("balanced"):
            sets = 1 if hard or level < VARIANTS.index("curriculum") else int(rng.random() >= 0.25)
            chains, noise = self._balanced(rng, sets)
        elif level >= VARIANTS.index("fixed"):
            chains, noise = self._random_chains(rng, MAX_CHAINS), []
        else:
            k = MAX_CHAINS if hard else int(rng.integers(1, MAX_CHAINS + 1))
            chains = self._random_chains(rng, k)
            noise = self._noise(rng, chains, EDGES - 2 * k)
        facts = self._ordered(rng, chains, noise, chain_order=level < VARIANTS.index("shuffled"))
        tokens: list[int] = []
        for subject, relation, obj in facts:
            tokens += [subject, self.relation(relation), obj] if relations else [subject, obj]
        target = chains[0]
        if mix and rng.random() < 0.5:  # a 1-hop question about any fact
            subject, relation, obj = facts[int(rng.integers(len(facts)))]
            question, answer, hops = [subject] + ([self.relation(relation)] if relations else []), obj, 1
        else:
            question = [target[0][0]] + ([self.relation(target[0][1]), self.relation(target[1][1])]
                                         if relations else [])
            answer, hops = target[1][2], 2
        prefix = [QUERY] if relations else []
        tokens += prefix + question
        return tokens, len(tokens) - 1, answer, hops

    def _entities(self, rng: np.random.Generator, n: int) -> list[int]:
        return [self.entity0 + int(i) for i in rng.choice(self.n_entities, size=n, replace=False)]

    def _relations(self, rng: np.random.Generator) -> int:
        return int(rng.integers(max(self.n_relations, 1)))

    def _random_chains(self, rng: np.random.Generator, k: int) -> list[tuple[tuple[int, int, int], ...]]:
        names = self._entities(rng, 3 * k)
        return [((names[3 * i], self._relations(rng), names[3 * i + 1]),
                 (names[3 * i + 1], self._relations(rng), names[3 * i + 2])) for i in range(k)]

    def _noise(self, rng: np.random.Generator, chains, n: int) -> list[tuple[int, int, int]]:
        used = {entity for chain in chains for subject, _, obj in chain for entity in (subject, obj)}
        free = [e for e in range(self.entity0, self.vocab) if e not in used]
        picked = rng.choice(len(free), size=2 * n, replace=False)
        return [(free[picked[2 * i]], self._relations(rng), free[picked[2 * i + 1]]) for i in range(n)]

    def _balanced(self, rng: np.random.Generator, sets: int):
        """A target chain and ``sets`` x (branch, fresh, unrelated), as actbridge.data.worlds draws them."""
        r1, r2 = (int(r) for r in rng.choice(self.n_relations, size=2))
        names = self._entities(rng, 3 + 8 * sets)
        take = iter(names[3:])
        target = ((names[0], r1, names[1]), (names[1], r2, names[2]))
        others = [r for r in range(self.n_relations) if r != r1]
        chains = [target]
        for branch in rng.permutation(others)[:sets]:
            b1, f0, f1, u0, u1 = (next(take) for _ in range(5))
            b2, f2, u2 = next(take), next(take), next(take)
            unrelated = int(others[int(rng.integers(len(others)))])
            chains += [((names[0], int(branch), b1), (b1, r2, b2)), ((f0, r1, f1), (f1, r2, f2)),
                       ((u0, unrelated, u1), (u1, r2, u2))]
        return chains, []

    @staticmethod
    def _ordered(rng, chains, noise, *, chain_order: bool) -> list[tuple[int, int, int]]:
        facts = [fact for chain in chains for fact in chain] + list(noise)
        order = list(rng.permutation(len(facts)))
        if chain_order:  # each chain's first edge before its second, as Guo et al.'s hops_to_seq
            for i in range(len(chains)):
                first, second = order.index(2 * i), order.index(2 * i + 1)
                if first > second:
                    order[first], order[second] = order[second], order[first]
        return [facts[i] for i in order]

    def batch(self, rng: np.random.Generator, n: int, *, hard: bool = False):
        rows = [self.sequence(rng, hard=hard) for _ in range(n)]
        width = max(len(tokens) for tokens, *_ in rows)
        ids = torch.full((n, width), PAD, dtype=torch.long)
        for i, (tokens, *_) in enumerate(rows):
            ids[i, : len(tokens)] = torch.tensor(tokens)
        at = torch.tensor([position for _, position, _, _ in rows])
        answers = torch.tensor([answer for _, _, answer, _ in rows])
        hops = torch.tensor([hop for *_, hop in rows])
        return ids, at, answers, hops


def torch_default_init(model: GPT2LMHeadModel) -> None:
    """PyTorch's own initialisation, as a model built from ``nn.Embedding`` and ``nn.Linear`` (Guo et al.'s
    ``model.py``) starts: embeddings N(0, 1) (GPT-2's are N(0, 0.02)), every projection uniform in
    +-1/sqrt(fan_in) (GPT-2's N(0, 0.02))."""
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            torch.nn.init.normal_(module.weight, 0.0, 1.0)
        elif isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D":
            fan_in = module.weight.shape[1] if isinstance(module, torch.nn.Linear) else module.weight.shape[0]
            bound = 1 / fan_in ** 0.5
            torch.nn.init.uniform_(module.weight, -bound, bound)
            if getattr(module, "bias", None) is not None:
                torch.nn.init.uniform_(module.bias, -bound, bound)


def answer_logits(model: GPT2LMHeadModel, ids: torch.Tensor, at: torch.Tensor, entity0: int) -> torch.Tensor:
    """Logits over the entity tokens at each row's answer-predicting position ([batch, entities])."""
    hidden = model.transformer(input_ids=ids).last_hidden_state[torch.arange(len(ids)), at]
    return model.lm_head(hidden)[:, entity0:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=1)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", choices=("gpt2", "guo"), default="gpt2",
                        help="gpt2: transformers' GPT-2 (N(0, 0.02) init, unembedding tied to the embedding); guo: "
                             "as Guo et al.'s model.py builds it (PyTorch's default init, an untied output layer)")
    parser.add_argument("--out", default="results/probes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    task = Task(args.variant)
    config = GPT2Config(vocab_size=task.vocab, n_positions=64, n_embd=args.hidden, n_layer=args.layers,
                        n_head=args.heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        tie_word_embeddings=args.model == "gpt2")
    model = GPT2LMHeadModel(config)
    if args.model == "guo":
        torch_default_init(model)
    parameters = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=1e-4)
    heldout = task.batch(np.random.default_rng(10_000 + args.seed), 1000, hard=True)
    out = ROOT / args.out / f"{args.name}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.open("w")
    header = {"name": args.name, "variant": args.variant, "parameters": parameters, **vars(args)}
    print(json.dumps(header), flush=True)
    log.write(json.dumps(header) + "\n")
    started, running = time.perf_counter(), 0.0
    for step in range(1, args.steps + 1):
        ids, at, answers, _ = task.batch(rng, args.batch)
        loss = torch.nn.functional.cross_entropy(answer_logits(model, ids, at, task.entity0),
                                                 answers - task.entity0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running += loss.item()
        if step % args.every == 0:
            model.eval()
            with torch.no_grad():
                ids, at, answers, hops = heldout
                correct = (answer_logits(model, ids, at, task.entity0).argmax(-1) == answers - task.entity0)
            model.train()
            record = {"step": step, "sequences": step * args.batch, "seconds": round(time.perf_counter() - started, 1),
                      "loss": round(running / args.every, 4),
                      **{f"acc_{h}hop": round(correct[hops == h].float().mean().item(), 4)
                         for h in sorted(set(hops.tolist()))},
                      "chance_2hop": 1 / MAX_CHAINS}
            running = 0.0
            print(json.dumps(record), flush=True)
            log.write(json.dumps(record) + "\n")
            log.flush()


if __name__ == "__main__":
    main()
