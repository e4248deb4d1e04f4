"""Synthetic multi-hop questions over fictional entities.

Every example is a small *world*: a focus chain of facts that answers the
question, plus ``distractors`` chains built to defeat shortcuts, all drawn
afresh so no answer can be memorized.

A k-hop focus chain is ``subject -r1-> e1 -r2-> ... -rk-> answer`` over
person-to-person relations; the answer is itself a person. ``e1`` is the
*bridge entity*: the intermediate state the sender computes and the receiver
needs.

Why the answer is a name and not a value from a small closed set (a city, a
colour): with a dozen possible values, small models settle for "name any
value in the prompt that was not asked yet" and never learn to look the
subject up. When answers are names like the subjects, that heuristic is
useless and retrieval is learned (probe results: docs/measurements.md).

Distractor chains have the focus chain's length and end in other people:

* a *branch* starts at the focus subject with a different first relation (so
  the relation in the question must be read);
* a *fresh* chain starts at another subject with the same relations (so the
  subject in the question must be read).

That random mix leaves a shortcut: a world whose distractors are all branches is answered by reading
the relations alone, one whose distractors are all fresh by reading the subject alone. The *balanced*
form (``data.distractor_form: balanced``) removes it: its distractors come in sets of three, a branch,
a fresh chain and an *unrelated* chain (another subject, another first relation), so among the
``distractors + 1`` chains as many share the subject as share the relations, and a reader of one cue
is right exactly as often as it is wrong in each of the others' halves: with one set, guessing scores
0.25, either cue alone 0.50 and only composing both 1.0 (:func:`cue_counts` measures it per question).

Branching happens only at the subject, so in the asymmetric split the
receiver's facts form ``distractors + 1`` disjoint chains of identical shape,
each starting at an entity it has never seen: nothing in its prompt tells the
focus chain apart, which is what makes its chance level the true floor.

Context modes:

* ``shared``: sender and receiver read every fact (the reference study);
* ``asymmetric``: hop-1 facts (those whose subject is a chain root) go only to
  the sender, all later facts only to the receiver, the question to both.
  Defined for k >= 2 only: a 1-hop question has no later facts.
* ``relay``: 1-hop questions, every fact only in the sender's prompt, the
  question alone in the receiver's: the answer the sender looks up is what
  must cross. It is asymmetric's k = 1 case, a mode of its own so that its
  statistics are not pooled with the 2-hop ones. It is the channel's positive
  control: a receiver that answers 1-hop questions from its full prompt has a
  self-patch upper bound here even when it cannot compose two hops, so
  channel efficiency is defined. (For k >= 2 the whole answer crossing needs
  a sender that composes; ``asymmetric`` asks for the first hop only.)
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa

from actbridge.config import default_of

SYLLABLES: tuple[str, ...] = (
    "ba", "ko", "ri", "zu", "mel", "dor", "fen", "ta", "vi", "lo",
    "ne", "sar", "gu", "pim", "rax", "tul", "yo", "ek", "wen", "qua",
    "bis", "mo", "ja", "hul", "cer", "nix", "pa", "dru",
)
RELATIONS: tuple[str, ...] = ("mentor", "friend", "boss", "rival", "neighbor", "cousin")
SPLITS: tuple[str, ...] = ("lm_train", "bridge_train", "bridge_val", "eval")
CONTEXT_MODES: tuple[str, ...] = ("shared", "asymmetric", "relay")
# Modes whose receiver prompt lacks facts of the full one: self-patching and channel efficiency apply.
PARTIAL_MODES: tuple[str, ...] = ("asymmetric", "relay")
# (mode, prompt side) pairs a model's accuracy table scores: in shared mode every side reads the full prompt,
# in relay mode the sender does too, so only the receiver's half is new there.
ACCURACY_VIEWS: tuple[tuple[str, str], ...] = (("shared", "full"), ("asymmetric", "sender"),
                                               ("asymmetric", "receiver"), ("relay", "receiver"))
MAX_DISTRACTORS = 11
DISTRACTOR_FORMS: tuple[str, ...] = ("random", "balanced")
FORM_KEYS: tuple[str, ...] = ("distractor_form", "lm_train_form")  # the data.* keys that name a form
BALANCED_SET = 3  # a balanced form's distractors: one branch, one fresh and one unrelated chain per set
MAX_SHOTS = 8
SHOT_SEPARATOR = "\n"
QUESTION_MARK = "Q:"
FACTS_MARK = "Facts:"  # so every name, the first included, follows a space and tokenizes alike


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """What the dataset stage reads from the config (``data.*`` plus ``seed``).

    The keys the schema (src/actbridge/config.schema.yaml) requires have no default here; those
    it defaults have the same default here, so a config that leaves them out reads the same.
    """

    seed: int
    hops: tuple[int, ...]
    distractors: int
    sizes: dict[str, int]
    # every mode; each split keeps those that apply to it (mode_applies): lm_train, whose rule passes no
    # modes, keeps its shared rows
    context_modes: tuple[str, ...] = CONTEXT_MODES
    train_questions: int = field(default_factory=default_of("data.train_questions"))
    template: str = field(default_factory=default_of("data.template"))
    # solved demonstrations before every prompt of bridge_train, bridge_val and eval
    shots: int = field(default_factory=default_of("data.shots"))
    # how distractor chains are drawn for the splits that are asked about, and for lm_train (0..distractors of
    # them per world, so the random form's default keeps the shipped models' data)
    distractor_form: str = field(default_factory=default_of("data.distractor_form"))
    lm_train_form: str = field(default_factory=default_of("data.lm_train_form"))

    def __post_init__(self) -> None:
        if not 0 <= self.shots <= MAX_SHOTS:
            raise ValueError(f"data.shots must be in [0, {MAX_SHOTS}], got {self.shots}")
        if not self.hops or min(self.hops) < 1:
            raise ValueError(f"data.hops must be a non-empty list of ints >= 1, got {self.hops}")
        if not 0 <= self.distractors <= MAX_DISTRACTORS:
            raise ValueError(f"data.distractors must be in [0, {MAX_DISTRACTORS}], got {self.distractors}")
        if self.template not in TEMPLATES:
            raise ValueError(f"data.template must be one of {list(TEMPLATES)}, got {self.template!r}")
        unknown = set(self.context_modes) - set(CONTEXT_MODES)
        if unknown or not self.context_modes:
            raise ValueError(f"data.context_modes must be a non-empty subset of {list(CONTEXT_MODES)}")
        for key in FORM_KEYS:
            if problem := distractor_form_problem(getattr(self, key), self.distractors, self.hops, key=f"data.{key}"):
                raise ValueError(problem)

    @classmethod
    def from_config(cls, config: dict) -> "DataConfig":
        """``seed`` and ``data.*`` of a config."""
        return cls._from_keys(config["seed"], config["data"], config["data"]["sizes"])

    def split_params(self, split: str) -> dict:
        """The keys that change ``split``'s bytes (the dataset rule's params): resizing eval never rebuilds
        lm_train, and lm_train reads no context modes or shots."""
        params = {"seed": self.seed, "hops": list(self.hops), "distractors": self.distractors,
                  "template": self.template, "size": self.sizes[split]}
        if split == "lm_train":
            params["train_questions"] = self.train_questions
            if self.lm_train_form != "random":  # absent when random, so the shipped models' recipes keep their hash
                params["lm_train_form"] = self.lm_train_form
        else:
            params["context_modes"] = list(self.context_modes)
            params["shots"] = self.shots
            if self.distractor_form != "random":  # absent when random, so existing splits keep their params
                params["distractor_form"] = self.distractor_form
        return params

    @classmethod
    def from_split_params(cls, params: dict, split: str) -> "DataConfig":
        """The dataset rule's params for ``split``: ``seed``, the split's ``size`` and the ``data.*`` keys that
        change its bytes (``data_params`` in workflow/rules/common.smk). A key they leave out is one the split
        never reads, and keeps its default."""
        return cls._from_keys(params["seed"], params, {split: params["size"]})

    @classmethod
    def _from_keys(cls, seed: int, data: dict, sizes: dict) -> "DataConfig":
        """From ``data.*`` keys; an optional key that is absent keeps the dataclass default."""
        optional = {
            "context_modes": lambda modes: tuple(modes),
            "train_questions": int,
            "template": str,
            "shots": int,
            "distractor_form": str,
            "lm_train_form": str,
        }
        return cls(
            seed=int(seed),
            hops=tuple(int(hop) for hop in data["hops"]),
            distractors=int(data["distractors"]),
            sizes={split: int(size) for split, size in sizes.items()},
            **{key: convert(data[key]) for key, convert in optional.items() if key in data},
        )


@dataclass(frozen=True)
class Fact:
    subject: str
    relation: str
    obj: str
    depth: int  # 0 for a fact whose subject is a chain root


@dataclass(frozen=True)
class Chain:
    entities: tuple[str, ...]  # root first, answer last; len == hops + 1
    relations: tuple[str, ...]  # len == hops

    @property
    def answer(self) -> str:
        return self.entities[-1]

    def facts(self) -> list[Fact]:
        return [Fact(subject, relation, obj, depth) for depth, (subject, relation, obj)
                in enumerate(zip(self.entities, self.relations, self.entities[1:]))]


@dataclass(frozen=True)
class World:
    focus: Chain
    distractors: tuple[Chain, ...]
    fact_order: tuple[Fact, ...]  # shuffled, every fact of every chain

    @property
    def hops(self) -> int:
        return len(self.focus.relations)

    @property
    def bridge_entity(self) -> str | None:
        return self.focus.entities[1] if self.hops >= 2 else None

    def chains(self) -> tuple[Chain, ...]:
        return (self.focus, *self.distractors)


@dataclass(frozen=True)
class Template:
    """How facts and questions are written. Both keep the chain order (subject first).

    * ``compact``: ``Bako mentor Rizu.`` / ``Q: Bako mentor friend`` -> `` Zune``.
      The object directly follows its (subject, relation) key, as a question
      directly continues a fact's prefix: the retrieval small models learn
      fastest (probe results: docs/measurements.md). Used for micro models.
    * ``english``: ``Bako's mentor is Rizu.`` / ``Q: Bako's mentor's friend is``:
      for pretrained models such as Pythia.
    """

    name: str

    def fact(self, fact: Fact) -> tuple[str, int]:
        """The fact's text and the character offset of its object in it."""
        if self.name == "compact":
            head = f"{fact.subject} {fact.relation} "
        else:
            head = f"{fact.subject}'s {fact.relation} is "
        return f"{head}{fact.obj}.", len(head)

    def question(self, subject: str, relations: Sequence[str]) -> str:
        if self.name == "compact":
            return f"{QUESTION_MARK} {subject} " + " ".join(relations)
        return f"{QUESTION_MARK} {subject}'s " + "'s ".join(relations) + " is"


TEMPLATES: tuple[str, ...] = ("compact", "english")

# Readers of the two templates' facts (the inverse of Template.fact), for first-hop supervision.
FACT_PATTERNS: dict[str, re.Pattern] = {
    "compact": re.compile(r"(\S+) (\S+) (\S+)\."),
    "english": re.compile(r"(\S+)'s (\S+) is (\S+)\."),
}


def fact_lookup(facts_text: str) -> dict[tuple[str, str], str]:
    """``(subject, relation) -> object`` for every fact of a prompt in either template."""
    # english first: the compact pattern also matches the tail of an english fact ("mentor is Rizu.")
    for pattern in (FACT_PATTERNS["english"], FACT_PATTERNS["compact"]):
        found = {(subject, relation): obj for subject, relation, obj in pattern.findall(facts_text)}
        if found:
            return found
    return {}


def first_relation_span(question: str) -> tuple[int, int, str, str]:
    """Character span of a question's first relation, its subject and that relation (both templates)."""
    body = question[len(QUESTION_MARK) + 1:]
    subject = body.split(" ")[0].removesuffix("'s")
    start = len(QUESTION_MARK) + 1 + body.index(" ") + 1
    relation = question[start:].split(" ")[0].removesuffix("'s")
    return start, start + len(relation), subject, relation


def name_pool() -> tuple[str, ...]:
    """Every two-syllable name, capitalized: 784 names no model has seen as entities."""
    return tuple((a + b).capitalize() for a, b in itertools.product(SYLLABLES, repeat=2))


_NAMES = name_pool()


def distractor_form_problem(form: str, distractors: int, hops: Sequence[int], *,
                            key: str = "data.distractor_form") -> str | None:
    """What stops ``form`` (config key ``key``) with ``distractors`` chains (config key data.distractors) from being
    built, or None."""
    if form not in DISTRACTOR_FORMS:
        return f"{key} must be one of {list(DISTRACTOR_FORMS)}, got {form!r}"
    if form != "balanced":
        return None
    sets = distractors // BALANCED_SET
    if distractors < BALANCED_SET or distractors % BALANCED_SET:
        return (f"data.distractors: {distractors} cannot be balanced: {key} 'balanced' draws "
                f"distractors in sets of {BALANCED_SET} (a branch from the subject, a fresh chain with the "
                f"question's relations, an unrelated chain), so it needs a multiple of {BALANCED_SET}; the "
                f"smallest is {BALANCED_SET}")
    if sets > len(RELATIONS) - 1:  # each branch needs its own first relation, unlike the question's
        return (f"data.distractors: {distractors} needs {sets} branches from the subject, each with a first "
                f"relation of its own, but there are only {len(RELATIONS) - 1} relations besides the question's; "
                f"the largest that works is {BALANCED_SET * (len(RELATIONS) - 1)}")
    names = max((hop + 1) * (1 + 2 * sets) + hop * sets for hop in hops)
    if names > len(_NAMES):
        return (f"data.distractors: {distractors} with data.hops up to {max(hops)} needs {names} distinct names "
                f"per world, more than the {len(_NAMES)} there are")
    return None


def sample_world(rng: np.random.Generator, hops: int, n_distractors: int, *, balanced: bool = False) -> World:
    """Draw one world; names are distinct and every (entity, relation) pair has one object.

    ``balanced``: the distractors are ``n_distractors / 3`` sets of a branch, a fresh chain and an unrelated
    chain, in random order (see the module's docstring); otherwise each is a branch or a fresh chain at random.
    """
    if balanced:
        return _balanced_world(rng, hops, n_distractors)
    n_names = (hops + 1) + n_distractors * (hops + 1)
    names = [_NAMES[i] for i in rng.choice(len(_NAMES), size=n_names, replace=False)]
    relations = tuple(str(r) for r in rng.choice(RELATIONS, size=hops))
    focus = Chain(tuple(names[: hops + 1]), relations)
    taken = hops + 1
    # A branch needs an unused first relation at the subject.
    unused_first = [str(r) for r in rng.permutation([r for r in RELATIONS if r != relations[0]])]
    distractors = []
    for _ in range(n_distractors):
        if unused_first and rng.random() < 0.5:
            chain = Chain((focus.entities[0], *names[taken: taken + hops]), (unused_first.pop(), *relations[1:]))
            taken += hops
        else:
            chain = Chain(tuple(names[taken: taken + hops + 1]), relations)
            taken += hops + 1
        distractors.append(chain)
    all_facts = [fact for chain in (focus, *distractors) for fact in chain.facts()]
    order = rng.permutation(len(all_facts))
    return World(focus, tuple(distractors), tuple(all_facts[i] for i in order))


def _balanced_world(rng: np.random.Generator, hops: int, n_distractors: int) -> World:
    sets = n_distractors // BALANCED_SET
    n_names = (hops + 1) * (1 + 2 * sets) + hops * sets
    names = iter(_NAMES[i] for i in rng.choice(len(_NAMES), size=n_names, replace=False))
    relations = tuple(str(r) for r in rng.choice(RELATIONS, size=hops))
    focus = Chain(tuple(next(names) for _ in range(hops + 1)), relations)
    others = [r for r in RELATIONS if r != relations[0]]
    branch_first = [str(r) for r in rng.permutation(others)[:sets]]
    distractors = []
    for branch in branch_first:
        unrelated = str(others[int(rng.integers(len(others)))])
        distractors += [
            Chain((focus.entities[0], *(next(names) for _ in range(hops))), (branch, *relations[1:])),
            Chain(tuple(next(names) for _ in range(hops + 1)), relations),
            Chain(tuple(next(names) for _ in range(hops + 1)), (unrelated, *relations[1:])),
        ]
    distractors = [distractors[i] for i in rng.permutation(len(distractors))]
    all_facts = [fact for chain in (focus, *distractors) for fact in chain.facts()]
    order = rng.permutation(len(all_facts))
    return World(focus, tuple(distractors), tuple(all_facts[i] for i in order))


def cue_counts(prompt: str, subject: str, relations: Sequence[str]) -> tuple[int, int, int]:
    """(chains, chains from the question's subject, chains along the question's relations) among the facts of
    one world's prompt (either template; its demonstrations, the lines before the last, are skipped): how
    many candidates a reader of neither cue, of the subject alone and of the relations alone must choose
    among. Chains are the paths from an entity no fact names as an object to one that starts no fact."""
    lookup = fact_lookup(prompt.rsplit(SHOT_SEPARATOR, 1)[-1])
    objects = set(lookup.values())
    children: dict[str, list[tuple[str, str]]] = {}
    for (head, relation), obj in lookup.items():
        children.setdefault(head, []).append((relation, obj))
    paths: list[tuple[str, tuple[str, ...]]] = []  # (root, relations)

    def walk(root: str, entity: str, taken: tuple[str, ...]) -> None:
        if entity not in children or len(taken) > MAX_HOPS_WALKED:
            paths.append((root, taken))
            return
        for relation, obj in children[entity]:
            walk(root, obj, (*taken, relation))

    for root in sorted(set(children) - objects):
        walk(root, root, ())
    return (len(paths), sum(root == subject for root, _ in paths),
            sum(taken == tuple(relations) for _, taken in paths))


MAX_HOPS_WALKED = 16  # a bound on chain length, so a malformed prompt with a cycle cannot recurse forever


@dataclass(frozen=True)
class Prompt:
    """Prompt text plus the character spans that name token roles."""

    text: str
    bridge_span: tuple[int, int] | None  # first mention of the bridge entity
    subject_span: tuple[int, int]  # the subject's mention in the question
    relation_span: tuple[int, int]  # the question's first relation: where a chain-order reader resolves hop 1


def render_prompt(template: Template, facts: Sequence[Fact], *, question: str, subject: str,
                  bridge: str | None, first_relation: str) -> Prompt:
    pieces = [FACTS_MARK]
    bridge_span = None
    offset = len(FACTS_MARK) + 1
    for fact in facts:
        text, object_offset = template.fact(fact)
        if bridge_span is None and bridge == fact.subject:
            bridge_span = (offset, offset + len(bridge))
        elif bridge_span is None and bridge == fact.obj:
            bridge_span = (offset + object_offset, offset + object_offset + len(bridge))
        pieces.append(text)
        offset += len(text) + 1
    text = " ".join([*pieces, question])
    subject_start = offset + len(QUESTION_MARK) + 1
    assert text[subject_start: subject_start + len(subject)] == subject
    relation_start = text.index(f" {first_relation}", subject_start + len(subject)) + 1
    return Prompt(text, bridge_span, (subject_start, subject_start + len(subject)),
                  (relation_start, relation_start + len(first_relation)))


def prompts_for_mode(world: World, mode: str, template: Template) -> dict[str, Prompt]:
    """Sender, receiver and full-context prompts of ``world`` in ``mode``."""
    question = template.question(world.focus.entities[0], world.focus.relations)
    subject, bridge = world.focus.entities[0], world.bridge_entity
    context = {"question": question, "subject": subject, "bridge": bridge,
               "first_relation": world.focus.relations[0]}
    full = render_prompt(template, world.fact_order, **context)
    if mode == "shared":
        return {"sender": full, "receiver": full, "full": full}
    if mode == "asymmetric":
        first_hop = [fact for fact in world.fact_order if fact.depth == 0]
        later = [fact for fact in world.fact_order if fact.depth > 0]
        return {
            "sender": render_prompt(template, first_hop, **context),
            "receiver": render_prompt(template, later, **context),
            "full": full,
        }
    if mode == "relay":
        return {"sender": full, "receiver": render_prompt(template, [], **context), "full": full}
    raise ValueError(f"unknown context mode {mode!r}; allowed: {list(CONTEXT_MODES)}")


def demo_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The demonstrations' own stream per example: adding shots never changes the worlds asked about."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, SPLITS.index(split), index, 1])))


def demonstrations(world: World, rng: np.random.Generator, *, shots: int, template: Template,
                   balanced: bool = False) -> str:
    """``shots`` solved questions on fresh worlds of the same shape (full context, the answer written after
    the question), each followed by :data:`SHOT_SEPARATOR`. A demonstration world shares no name with
    ``world`` nor with another demonstration, so no fact of the question's world is shown solved."""
    taken = {name for chain in world.chains() for name in chain.entities}
    pieces = []
    while len(pieces) < shots:
        demo = sample_world(rng, world.hops, len(world.distractors), balanced=balanced)
        names = {name for chain in demo.chains() for name in chain.entities}
        if names & taken:
            continue
        taken |= names
        question = template.question(demo.focus.entities[0], demo.focus.relations)
        solved = render_prompt(template, demo.fact_order, question=question, subject=demo.focus.entities[0],
                               bridge=demo.bridge_entity, first_relation=demo.focus.relations[0])
        pieces.append(f"{solved.text} {demo.focus.answer}{SHOT_SEPARATOR}")
    return "".join(pieces)


def after(prefix: str, prompt: Prompt) -> Prompt:
    """``prompt`` behind ``prefix``, its spans moved along."""
    def moved(span):
        return None if span is None else (span[0] + len(prefix), span[1] + len(prefix))

    return Prompt(prefix + prompt.text, moved(prompt.bridge_span), moved(prompt.subject_span),
                  moved(prompt.relation_span))


def counterfactual_world(world: World) -> World | None:
    """The same world with the focus's first-hop object swapped for the first distractor chain's: a new bridge
    entity and a new answer, every other fact and the question unchanged (None without a later hop or a distractor).

    Every distractor chain carries the focus's later relations from its second
    entity on, so ``subject -r1-> e1'`` continues along it to its end ``Z'``,
    which is one of the world's candidates. The old ``e1 -r2-> ...`` facts stay
    (now unreachable from the question), so the prompt keeps its length in facts.
    Counterfactual activation patching runs the model on this prompt and moves
    its state at a role into the original prompt.
    """
    if world.hops < 2 or not world.distractors:
        return None
    donor = world.distractors[0]
    subject, first = world.focus.entities[0], world.focus.relations[0]
    new_bridge = donor.entities[1]
    focus = Chain((subject, *donor.entities[1:]), world.focus.relations)
    swapped = tuple(Fact(fact.subject, fact.relation, new_bridge, fact.depth)
                    if (fact.subject, fact.relation) == (subject, first) else fact for fact in world.fact_order)
    return World(focus, world.distractors, swapped)


def training_questions(world: World, rng: np.random.Generator, *, n_questions: int,
                       template: Template) -> list[tuple[str, str, int]]:
    """Extra (question, answer, hops) triples about the same world, for dense LM supervision.

    Holds the focus question, every chain's full question and every single
    fact as a 1-hop question; returns ``n_questions`` of them in random order,
    the focus question always among them.
    """
    focus_question = (template.question(world.focus.entities[0], world.focus.relations), world.focus.answer,
                      world.hops)
    pool = []
    for chain in world.distractors:
        pool.append((template.question(chain.entities[0], chain.relations), chain.answer, len(chain.relations)))
    for fact in world.fact_order:
        pool.append((template.question(fact.subject, (fact.relation,)), fact.obj, 1))
    pool = [question for question in dict.fromkeys(pool) if question != focus_question]
    chosen = [pool[i] for i in rng.permutation(len(pool))[: max(n_questions - 1, 0)]]
    chosen.append(focus_question)
    return [chosen[i] for i in rng.permutation(len(chosen))]


SCHEMA = pa.schema([
    ("example_id", pa.string()),
    ("split", pa.string()),
    ("mode", pa.string()),
    ("hops", pa.int8()),
    ("relations", pa.list_(pa.string())),
    ("subject", pa.string()),
    ("bridge_entity", pa.string()),
    ("answer", pa.string()),
    ("candidates", pa.list_(pa.string())),
    ("n_facts", pa.int16()),
    ("sender_prompt", pa.string()),
    ("receiver_prompt", pa.string()),
    ("full_prompt", pa.string()),
    ("sender_bridge_span", pa.list_(pa.int32(), 2)),
    ("receiver_bridge_span", pa.list_(pa.int32(), 2)),
    ("full_bridge_span", pa.list_(pa.int32(), 2)),
    ("sender_subject_span", pa.list_(pa.int32(), 2)),
    ("receiver_subject_span", pa.list_(pa.int32(), 2)),
    ("full_subject_span", pa.list_(pa.int32(), 2)),
    ("sender_relation_span", pa.list_(pa.int32(), 2)),
    ("receiver_relation_span", pa.list_(pa.int32(), 2)),
    ("full_relation_span", pa.list_(pa.int32(), 2)),
    ("train_questions", pa.list_(pa.struct([("question", pa.string()), ("answer", pa.string()),
                                            ("hops", pa.int8())]))),
    # shared rows with a later hop: the full prompt of counterfactual_world (see there)
    ("counterfactual_prompt", pa.string()),
    ("counterfactual_answer", pa.string()),
    ("counterfactual_bridge_span", pa.list_(pa.int32(), 2)),
    ("counterfactual_subject_span", pa.list_(pa.int32(), 2)),
    ("counterfactual_relation_span", pa.list_(pa.int32(), 2)),
])


def split_rng(seed: int, split: str) -> np.random.Generator:
    """Independent stream per split, so resizing one split never changes another."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, SPLITS.index(split)])))


def mode_applies(mode: str, hops: int, split: str) -> bool:
    """Whether ``split`` holds a row of ``mode`` for a k-hop world.

    Asymmetric needs a later hop, relay is its 1-hop case, and LM training
    reads full-context prompts only.
    """
    if mode == "shared":
        return True
    if split == "lm_train":
        return False
    return hops >= 2 if mode == "asymmetric" else hops == 1


def iter_split_rows(config: DataConfig, split: str) -> Iterator[dict]:
    """Rows of ``split``: one per world and context mode.

    Asymmetric rows exist for k >= 2 only, relay rows for k = 1 only, neither in ``lm_train``.
    """
    rng = split_rng(config.seed, split)
    template = Template(config.template)
    for index in range(config.sizes[split]):
        hops = config.hops[index % len(config.hops)]
        form = config.lm_train_form if split == "lm_train" else config.distractor_form
        n_distractors = _distractors_drawn(rng, config.distractors, form) if split == "lm_train" else config.distractors
        world = sample_world(rng, hops, n_distractors, balanced=form == "balanced")
        extra = (training_questions(world, rng, n_questions=config.train_questions, template=template)
                 if split == "lm_train" else [])
        candidates = sorted(chain.answer for chain in world.chains())
        shown = (demonstrations(world, demo_rng(config.seed, split, index), shots=config.shots, template=template,
                                balanced=config.distractor_form == "balanced")
                 if config.shots and split != "lm_train" else "")
        for mode in config.context_modes:
            if not mode_applies(mode, hops, split):
                continue
            prompts = {side: after(shown, prompt) for side, prompt in prompts_for_mode(world, mode, template).items()}
            counterfactual = counterfactual_world(world) if mode == "shared" and split != "lm_train" else None
            alternative = (after(shown, prompts_for_mode(counterfactual, "shared", template)["full"])
                           if counterfactual else None)
            yield {
                "example_id": f"{split}-{index:06d}",
                "split": split,
                "mode": mode,
                "hops": hops,
                "relations": list(world.focus.relations),
                "subject": world.focus.entities[0],
                "bridge_entity": world.bridge_entity,
                "answer": world.focus.answer,
                "candidates": candidates,
                "n_facts": len(world.fact_order),
                **{f"{side}_prompt": prompt.text for side, prompt in prompts.items()},
                **{f"{side}_bridge_span": (list(prompt.bridge_span) if prompt.bridge_span else None)
                   for side, prompt in prompts.items()},
                **{f"{side}_subject_span": list(prompt.subject_span) for side, prompt in prompts.items()},
                **{f"{side}_relation_span": list(prompt.relation_span) for side, prompt in prompts.items()},
                "train_questions": [{"question": question, "answer": answer, "hops": n_hops}
                                    for question, answer, n_hops in extra],
                "counterfactual_prompt": alternative.text if alternative else None,
                "counterfactual_answer": counterfactual.focus.answer if counterfactual else None,
                "counterfactual_bridge_span": list(alternative.bridge_span) if alternative else None,
                "counterfactual_subject_span": list(alternative.subject_span) if alternative else None,
                "counterfactual_relation_span": list(alternative.relation_span) if alternative else None,
            }


def _distractors_drawn(rng: np.random.Generator, distractors: int, form: str) -> int:
    """An lm_train world's distractor chains: 0..distractors (whole sets of a balanced form). The easy worlds
    teach the model to copy a name before the crowded ones teach it to pick the right one (a curriculum within
    each batch); in a balanced form, the worlds without distractors are those Guo et al.'s task (a single
    chain in a quarter of its sequences) starts from."""
    if form == "balanced":
        return BALANCED_SET * int(rng.integers(0, distractors // BALANCED_SET + 1))
    return int(rng.integers(0, distractors + 1))


def build_split(config: DataConfig, split: str) -> pa.Table:
    rows = list(iter_split_rows(config, split))
    return pa.Table.from_pylist(rows, schema=SCHEMA)
