"""Does a micro GPT-NeoX learn to compose two look-ups? One-off probe on freshly drawn worlds (kept as run).

    python benchmarks/probes/two_hop_probe.py NAME [--init MODEL_DIR] [--p2 1.0] [--nq2 3] [--ordered]
                                                   [--share 2 --tied] [--steps N] [--batch B] [--lr LR]

Worlds come from the pipeline's own sampler (``actbridge.data.worlds.sample_world``),
written as the ``compact`` template writes them, a new world for every
training sequence (no world repeats). Training sequences hold the facts and
``--nq`` questions: with probability ``--p2`` the world is 2-hop and ``--nq2``
of its questions are chain questions (the rest single-fact questions); loss
on answer tokens only. ``--init`` continues from a pipeline model directory
and encodes with its tokenizer (every name and relation is one token there);
without it, a fresh model on synthetic ids (one id per name / relation).
``--ordered`` writes each chain's facts in chain order (its first hop before
its second, chains still interleaved), as in the two-hop task of Guo et al.
2025 ("How do LLMs perform two-hop reasoning in context?"), whose 3-layer
model escapes the chain-end plateau. ``--share K`` ties block i to block
i mod K while training (a looped model: the 1-hop module applied twice).

Every ``--every`` steps it prints held-out exact match (arg-max over the whole
vocabulary, as the pipeline's ``score_answers``) on 300 worlds with 3
distractor chains: ``1hop``, ``2hop`` (chance 0.25 among chain ends),
``2hop_d1`` (1 distractor chain, chance 0.5) and ``2hop_ord`` (facts in chain
order). What it found is in docs/findings.md ("The models").
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import AutoTokenizer, GPTNeoXConfig, GPTNeoXForCausalLM  # noqa: E402

from actbridge.data.worlds import RELATIONS, World, name_pool, sample_world  # noqa: E402

Question = tuple[str, tuple[str, ...], str]  # (subject, relations, answer)


class Vocabulary:
    """Token ids of the compact template's pieces: a model's tokenizer, or one synthetic id each."""

    def __init__(self, tokenizer_dir: str | None) -> None:
        names = name_pool()
        if tokenizer_dir:
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
            ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
            self.pad, self.dot, self.facts, self.question = tokenizer.pad_token_id, ids(".")[0], ids("Facts:"), ids(" Q:")
            self.relation = {r: ids(" " + r)[0] for r in RELATIONS}
            self.name = {n: ids(" " + n)[0] for n in names}
            self.size = len(tokenizer)
        else:
            self.pad, self.facts, self.dot, self.question = 0, [1], 2, [3]
            self.relation = {r: 4 + i for i, r in enumerate(RELATIONS)}
            self.name = {n: 4 + len(RELATIONS) + i for i, n in enumerate(names)}
            self.size = 4 + len(RELATIONS) + len(names)


def chain_ordered(world: World) -> list:
    """The world's facts in the same slots, each chain's facts in chain order (hop 1 before hop 2)."""
    member = {fact: c for c, chain in enumerate(world.chains()) for fact in chain.facts()}
    slots: dict[int, list[int]] = {}
    for slot, fact in enumerate(world.fact_order):
        slots.setdefault(member[fact], []).append(slot)
    order = list(world.fact_order)
    for c, chain in enumerate(world.chains()):
        for slot, fact in zip(slots[c], chain.facts()):
            order[slot] = fact
    return order


def encode(vocab: Vocabulary, world: World, questions: list[Question], ordered: bool) -> tuple[list[int], list[int]]:
    """Token ids of facts + questions with answers, and the answer tokens' positions."""
    ids = list(vocab.facts)
    for fact in (chain_ordered(world) if ordered else world.fact_order):
        ids += [vocab.name[fact.subject], vocab.relation[fact.relation], vocab.name[fact.obj], vocab.dot]
    answers = []
    for subject, relations, answer in questions:
        ids += vocab.question + [vocab.name[subject]] + [vocab.relation[r] for r in relations]
        answers.append(len(ids))
        ids += [vocab.name[answer], vocab.dot]
    return ids, answers


def chain_question(chain) -> Question:
    return chain.entities[0], chain.relations, chain.answer


def training_sequence(rng: np.random.Generator, vocab: Vocabulary, args: argparse.Namespace) -> tuple[list[int], list[int]]:
    hops = 2 if rng.random() < args.p2 else 1
    world = sample_world(rng, hops, int(rng.integers(args.dmin, args.dmax + 1)))
    chains = [chain_question(c) for c in world.chains()] if hops == 2 else []
    pool = chains + [(f.subject, (f.relation,), f.obj) for f in world.fact_order]
    questions = [pool[i] for i in rng.permutation(len(pool))[: args.nq]]
    if chains and args.nq2 > 0:  # nq2 chain questions for certain, the rest as drawn
        questions = [chains[i] for i in rng.permutation(len(chains))[: args.nq2]] + questions[: max(args.nq - args.nq2, 0)]
        questions = [questions[i] for i in rng.permutation(len(questions))]
    return encode(vocab, world, questions, args.ordered)


def heldout(vocab: Vocabulary, seed: int, hops: int, distractors: int = 3, ordered: bool = False, n: int = 300):
    rng = np.random.default_rng(seed)
    worlds = [sample_world(rng, hops, distractors) for _ in range(n)]
    return [encode(vocab, w, [chain_question(w.focus)], ordered) for w in worlds]


def batch(sequences, pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask and answer mask, each [batch, width]."""
    width = max(len(ids) for ids, _ in sequences)
    input_ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    attention = torch.zeros(len(sequences), width, dtype=torch.long)
    answers = torch.zeros(len(sequences), width, dtype=torch.bool)
    for row, (ids, positions) in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        answers[row, positions] = True
    return input_ids, attention, answers


def answer_logits(model, input_ids, attention, answers) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits predicting each answer token [n, vocab] and the answer tokens [n]."""
    # use_cache=False: blocks shared by --share have one layer index, which a cache would mix up
    logits = model(input_ids=input_ids, attention_mask=attention, use_cache=False).logits
    return logits[:, :-1][answers[:, 1:]], input_ids[:, 1:][answers[:, 1:]]


@torch.no_grad()
def exact_match(model, sets: dict, pad: int) -> dict[str, float]:
    model.eval()
    scores = {}
    for name, sequences in sets.items():
        logits, targets = answer_logits(model, *batch(sequences, pad))
        scores[name] = round(float((logits.argmax(-1) == targets).float().mean()), 3)
    model.train()
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("--init", help="a pipeline model directory to continue from (its tokenizer encodes)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--tied", action="store_true")
    parser.add_argument("--share", type=int, default=0)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--wd", type=float, default=0.01)
    parser.add_argument("--p2", type=float, default=0.5)
    parser.add_argument("--nq", type=int, default=6)
    parser.add_argument("--nq2", type=int, default=0)
    parser.add_argument("--dmin", type=int, default=0)
    parser.add_argument("--dmax", type=int, default=3)
    parser.add_argument("--ordered", action="store_true")
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    vocab = Vocabulary(args.init)
    if args.init:
        model = GPTNeoXForCausalLM.from_pretrained(args.init)
    else:
        model = GPTNeoXForCausalLM(GPTNeoXConfig(
            vocab_size=vocab.size, hidden_size=args.hidden, num_hidden_layers=args.layers,
            num_attention_heads=args.heads, intermediate_size=4 * args.hidden, max_position_embeddings=256,
            use_parallel_residual=True, tie_word_embeddings=args.tied,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
            bos_token_id=vocab.facts[0], eos_token_id=vocab.dot, pad_token_id=vocab.pad))
    if args.share:
        blocks = model.gpt_neox.layers
        for i in range(args.share, len(blocks)):
            blocks[i] = blocks[i % args.share]
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.wd, betas=(0.9, 0.98))
    sets = {"1hop": heldout(vocab, 1, 1), "2hop": heldout(vocab, 2, 2), "2hop_d1": heldout(vocab, 3, 2, 1),
            "2hop_ord": heldout(vocab, 2, 2, ordered=True)}
    rng = np.random.default_rng(args.seed + 100)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    with open(Path(args.out) / f"{args.name}.jsonl", "w") as log:
        def report(record: dict) -> None:
            print(json.dumps(record), flush=True)
            log.write(json.dumps(record) + "\n")
            log.flush()

        report({"step": 0, **exact_match(model, sets, vocab.pad)})
        started, running = time.perf_counter(), 0.0
        for step in range(args.steps):
            lr = args.lr * min(1.0, (step + 1) / args.warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * step / args.steps)))
            for group in optimizer.param_groups:
                group["lr"] = lr
            logits, targets = answer_logits(
                model, *batch([training_sequence(rng, vocab, args) for _ in range(args.batch)], vocab.pad))
            loss = torch.nn.functional.cross_entropy(logits, targets)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            running += loss.item()
            if (step + 1) % args.every == 0:
                report({"step": step + 1, "loss": round(running / args.every, 4),
                        "seconds": round(time.perf_counter() - started), **exact_match(model, sets, vocab.pad)})
                running = 0.0


if __name__ == "__main__":
    main()
