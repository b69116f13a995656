"""Topic sampling: asks the teacher for distinct ML research topics in batches; returns records, writes nothing."""

from __future__ import annotations

import hashlib
import logging
import random
import re
import unicodedata
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, RootModel

from engine.prompting import render
from engine.protocols import ChatModel, SamplingParams
from engine.synth.records import RejectRecord, TopicRecord
from engine.synth.teacher_json import ask_json

log = logging.getLogger(__name__)

DOMAINS: tuple[str, ...] = (
    "vision", "nlp", "tabular", "time-series", "rl", "game-theory", "algorithms", "audio", "graphs",
    "recommender-systems", "optimization", "scientific-ml", "other",
)
"""The domains a topic is filed under; anything else the teacher says becomes "other"."""

_DOMAIN_ALIASES = {
    "computer-vision": "vision", "cv": "vision", "image": "vision", "images": "vision",
    "natural-language-processing": "nlp", "language": "nlp", "text": "nlp",
    "time-series-forecasting": "time-series", "timeseries": "time-series", "forecasting": "time-series",
    "reinforcement-learning": "rl", "control": "rl",
    "game-theory": "game-theory", "games": "game-theory", "game": "game-theory",
    "algorithm": "algorithms", "algorithmic": "algorithms", "combinatorial-optimization": "algorithms",
    "speech": "audio", "graph": "graphs", "graph-learning": "graphs", "recommendation": "recommender-systems",
    "recommender": "recommender-systems", "recsys": "recommender-systems", "tabular-data": "tabular",
}
_ARTICLES = frozenset({"a", "an", "the"})
PROMPT_TOPICS_SHOWN = 200
"""How many prior topics the prompt lists (the most recent), to bound its length."""


class TopicItem(BaseModel):
    """One topic as the teacher writes it."""

    model_config = ConfigDict(extra="ignore")  # a stray extra key is not worth a re-ask
    topic: str = Field(min_length=3, max_length=300)
    domain: str = "other"


class TopicBatch(RootModel[list[TopicItem]]):
    """The teacher's reply: a JSON array of topics."""


class TopicSampling(BaseModel):
    """What `sample_topics` returns: kept topics (existing first), rejects, and the teacher's cost."""

    model_config = ConfigDict(extra="forbid")
    topics: list[TopicRecord]
    rejects: list[RejectRecord] = Field(default_factory=list)
    cost_usd: float = 0.0
    calls: int = 0


def normalise_topic(text: str) -> str:
    """Lowercase, ASCII-folded, punctuation to spaces, articles dropped, whitespace collapsed.

    >>> normalise_topic("  The Effect of Label-Noise on  a CNN! ")
    'effect of label noise on cnn'
    """
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    words = re.sub(r"[^a-z0-9]+", " ", text).split()
    return " ".join(w for w in words if w not in _ARTICLES)


def normalise_domain(domain: str) -> str:
    """Map the teacher's domain to one of DOMAINS ("Computer Vision" → "vision"); unknown → "other"."""
    d = re.sub(r"[^a-z0-9]+", "-", domain.lower()).strip("-")
    d = _DOMAIN_ALIASES.get(d, d)
    return d if d in DOMAINS else "other"


def topic_id(normalised: str) -> str:
    """Stable id of a topic: a hash of its normalised text."""
    return hashlib.sha256(normalised.encode()).hexdigest()[:16]


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """Token-set Jaccard similarity; two empty sets are identical."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


class _Seen:
    """The kept topics' normalised forms, for exact and near-duplicate checks."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.exact: set[str] = set()
        self.tokens: list[frozenset[str]] = []

    def duplicate_of(self, norm: str) -> str | None:
        if norm in self.exact:
            return "exact"
        toks = frozenset(norm.split())
        for other in self.tokens:
            if jaccard(toks, other) >= self.threshold:
                return "near"
        return None

    def add(self, norm: str) -> None:
        self.exact.add(norm)
        self.tokens.append(frozenset(norm.split()))


def _focus_domains(rng: random.Random) -> list[str]:
    pool = [d for d in DOMAINS if d != "other"]
    return rng.sample(pool, 3)


def sample_topics(
    model: ChatModel,
    n: int,
    *,
    per_call: int,
    seed: int,
    existing: Sequence[TopicRecord] = (),
    params_base: SamplingParams | None = None,
    max_idle_batches: int = 3,
    near_dup_threshold: float = 0.8,
) -> TopicSampling:
    """Sample until `n` topics are kept (counting `existing`) or `max_idle_batches` batches in a row add none.

    Each batch asks for up to `per_call` topics, showing the domains (three of them, drawn with `seed`, as the
    batch's focus) and the last PROMPT_TOPICS_SHOWN kept topics. A topic whose normalised text equals a kept
    one, or whose token-set Jaccard with one is >= `near_dup_threshold`, is rejected ("duplicate_topic"); a
    batch whose reply stays invalid after one re-ask is rejected ("invalid_json"). Batches are numbered after
    the highest batch in `existing`, and each call is keyed "topics-<seed>-batch-<b>", so a resumed run asks
    new questions rather than replaying cached ones.
    """
    kept = list(existing)
    seen = _Seen(near_dup_threshold)
    for t in kept:
        seen.add(normalise_topic(t.topic))
    out = TopicSampling(topics=[])  # pydantic copies lists: `kept` is attached at the end
    batch = max((t.batch for t in kept), default=-1) + 1
    idle = 0
    while len(kept) < n and idle < max_idle_batches:
        rng = random.Random(f"{seed}|{batch}")
        want = min(per_call, n - len(kept))
        prompt = render(
            "synth/topics.j2", n=want, domains=[d for d in DOMAINS if d != "other"], focus_domains=_focus_domains(rng),
            prior_topics=[t.topic for t in kept[-PROMPT_TOPICS_SHOWN:]], n_prior=len(kept),
        )
        key = f"topics-{seed}-batch-{batch}"
        reply, call = ask_json(model, [{"role": "user", "content": prompt}], TopicBatch, key=key, params_base=params_base)
        out.cost_usd += call.cost_usd
        out.calls += call.calls
        added = 0
        if reply is None:
            out.rejects.append(RejectRecord(stage="topics", item_id=key, reason="invalid_json", detail=call.error or ""))
        else:
            for item in reply.root:  # type: ignore[attr-defined]
                if len(kept) >= n:
                    break
                norm = normalise_topic(item.topic)
                if not norm:
                    out.rejects.append(RejectRecord(stage="topics", item_id=key, reason="empty_topic", detail=item.topic))
                    continue
                dup = seen.duplicate_of(norm)
                if dup is not None:
                    out.rejects.append(RejectRecord(stage="topics", item_id=topic_id(norm), reason="duplicate_topic",
                                                    detail=f"{dup}: {item.topic.strip()}"))
                    continue
                seen.add(norm)
                kept.append(TopicRecord(topic_id=topic_id(norm), topic=" ".join(item.topic.split()),
                                        domain=normalise_domain(item.domain), batch=batch))
                added += 1
        idle = 0 if added else idle + 1
        log.info("topics batch %d: %d new, %d kept of %d", batch, added, len(kept), n)
        batch += 1
    if len(kept) < n:
        log.warning("topic sampling stopped at %d of %d topics: %d batches in a row added nothing new",
                    len(kept), n, max_idle_batches)
    out.topics = kept
    return out
