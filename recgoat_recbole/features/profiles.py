"""User preference profiles (the paper's LLM user profiles, §3.1): from each user's *training* interactions to an embedded profile vector.

1. :func:`training_histories` reproduces RecBole's split for the given config (same seed, same code path as
   ``run_recbole``) and keeps the training split only: no validation or test item can enter a profile.
2. A backend writes a profile per user:

   - ``template`` (offline default) -- **not an LLM**: a deterministic summary of the user's training items
     (most frequent values of the chosen item columns, e.g. genres and years, and frequent title words),
     clearly labelled as such;
   - ``transformers`` -- a local causal LM (name or path) prompted with the paper's two-step analyst prompt;
   - ``http`` -- any OpenAI-compatible chat endpoint (vLLM, Ollama, llama.cpp server, ...) at a URL.

   LLM outputs are ``<think>…</think><answer>…</answer>``; the answer part is kept (the whole text if the model
   forgot the tags). Profiles are appended to a JSONL cache as they are produced, so an interrupted run
   resumes where it stopped.
3. The profile texts are embedded with the text encoder and written as a feature file keyed by user token.
"""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.request
from collections import Counter
from typing import Callable, Iterable, Sequence

import pandas as pd
from tqdm.auto import tqdm

from recgoat_core.feature_files import check_output_path, file_fingerprint, write_features
from recgoat_recbole.config_check import ConfigError
from recgoat_recbole.features.text import check_text_encoder, encode_texts, encoder_fingerprint, load_text_encoder

__all__ = ["PROMPT", "training_histories", "split_histories", "split_fingerprint", "cached_template_profiles", "template_profile", "build_prompt", "extract_answer",
           "TransformersBackend", "HTTPBackend", "generate_profiles", "extract_profile_features",
           "template_profiles_for"]

logger = logging.getLogger(__name__)

PROMPT = """You are a professional data analyst. Your task is to analyze a user's interaction history to infer their preferences.

User Information
- User ID: {user}
- Interaction History:
{history}

Please conduct a structured reasoning by two steps:
1. Identify Common Attributes Across Items
- Extract shared characteristics from perspectives such as category, function, style, material, usage scenario, and price range. Organize the findings in a list format.
2. Summarize Preferences Across Multiple Dimensions
- Systematically summarize the user's preferences based on the following dimensions, with a brief explanation of supporting evidence:
  - Style & Aesthetics: e.g., design style, color preference, visual element tendencies
  - Function & Usability: e.g., functional needs, usage scenarios, interaction experience
  - Context & Emotion: e.g., emotional value associated with items, social attributes, life scenarios
  - Other Dimensions: e.g., brand loyalty, price sensitivity, attention to sustainability

Output Format:
<think> reasoning process here </think> <answer> answer here </answer>

Please provide your analysis below:"""

_STOP = set("the a an of and in on to for with at by from is it its as or be this that de la le".split())


# ------------------------------------------------------------------------------------- training split only
def training_histories(config) -> tuple[dict[str, list[str]], object, str]:
    """``{user token: [item tokens of the training split]}`` for a RecBole ``Config``, the dataset, and the
    training split's :func:`split_fingerprint`.

    Mirrors ``run_recbole``: ``init_seed`` then ``create_dataset`` then ``dataset.build()`` (the call
    ``data_preparation`` makes), so the split is the one training will use.
    """
    from recbole.data import create_dataset
    from recbole.utils import init_seed

    init_seed(config["seed"], config["reproducibility"])
    existing = config["user_profile_feat"]
    config["user_profile_feat"] = None  # the profiles being (re)built are not an input of the split
    try:
        dataset = create_dataset(config)
        train = dataset.build()[0]
    finally:
        config["user_profile_feat"] = existing
    return split_histories(train), dataset, split_fingerprint(train)


def split_histories(split) -> dict[str, list[str]]:
    """``{user token: [item tokens]}`` of one RecBole dataset split (e.g. the training split)."""
    users = split.id2token(split.uid_field, split.inter_feat[split.uid_field].numpy())
    items = split.id2token(split.iid_field, split.inter_feat[split.iid_field].numpy())
    histories: dict[str, list[str]] = {}
    for u, i in zip(users.tolist(), items.tolist()):
        histories.setdefault(str(u), []).append(str(i))
    return histories


def split_fingerprint(split) -> str:
    """sha256 of a split's (user, item) token pairs: which interactions profiles were built from.

    A profile file records the fingerprint of the training split it came from; the dataset hook refuses a
    profile file whose fingerprint is not the training split of the run (another seed, ratio or filtering
    could have put this run's validation or test items into the profiles).
    """
    import hashlib

    histories = split_histories(split)
    digest = hashlib.sha256()
    for user in sorted(histories):
        digest.update(f"{user}:{','.join(sorted(histories[user]))};".encode())
    return digest.hexdigest()


def cached_template_profiles(train_split, item_table: str, columns: Sequence[str], cache_dir: str,
                             encoder: str | None = None) -> str:
    """Template profiles of ``train_split``'s users, embedded and cached; returns the feature file's path.

    The cache key is the training split's fingerprint, the item table's contents, the columns and the text
    encoder's :func:`~recgoat_recbole.features.text.encoder_fingerprint` (a local folder's file contents), so
    a different split (seed, ratios, filtering) or encoder never reuses another's profiles. A damaged cache file is
    rebuilt with a warning.
    """
    import hashlib

    from recgoat_core.feature_files import reusable_cache
    from recgoat_recbole.features.text import read_table

    histories = split_histories(train_split)
    fingerprint = split_fingerprint(train_split)
    key = f"{fingerprint}|{file_fingerprint(item_table)}|{columns}|{encoder_fingerprint(encoder)}"
    digest = hashlib.sha1(key.encode())
    out = os.path.join(cache_dir, f"profiles-template-{digest.hexdigest()[:12]}.npz")
    if reusable_cache(out, "user profiles"):
        return out
    items = read_table(item_table)
    profiles = template_profiles_for(histories, items, items.columns[0], columns)
    _write_profile_texts(out + ".profiles.jsonl", profiles)
    logger.info(f"user profiles: {len(profiles)} template profiles from the training split -> {out}")
    return _embed_profiles(profiles, out, encoder, show_progress=False, split=fingerprint)


def _write_profile_texts(path: str, profiles: dict[str, str]) -> None:
    """The profile texts as JSONL (``{"user", "profile"}`` per line), the format :func:`_read_cache` reads."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for user in sorted(profiles):
            f.write(json.dumps({"user": user, "profile": profiles[user]}) + "\n")


def _embed_profiles(profiles: dict[str, str], output: str, encoder: str | None, show_progress: bool,
                    allow_download: bool = False, split: str | None = None) -> str:
    """Embed the profile texts with the text encoder and write them keyed by user token, with the training
    split's fingerprint ``split``; returns the path."""
    users = sorted(profiles)
    texts = [profiles[u] for u in users]
    vectors = encode_texts(texts, load_text_encoder(encoder, allow_download=allow_download),
                           show_progress=show_progress)
    mask = [bool(t.strip()) for t in texts]  # False: an empty profile (an LLM that answered nothing), a zero row
    if not all(mask):
        logger.warning(f"{mask.count(False)} of {len(mask)} user profiles are empty: zero rows, mask=False")
    return write_features(output, users, vectors, mask, split=split)


# ------------------------------------------------------------------------------------------------ template
def template_profile(item_rows: pd.DataFrame, columns: Sequence[str], top: int = 5) -> str:
    """The offline, deterministic profile of one user from the rows of their training items."""
    parts = [f"Template profile (frequency summary, not an LLM) of {len(item_rows)} training items."]
    for col in columns:
        if col not in item_rows.columns:
            continue
        values = item_rows[col].astype(str)
        if col in ("movie_title", "title", "name"):
            words = Counter(w for t in values for w in re.findall(r"[a-zA-Z']{3,}", t.lower()) if w not in _STOP)
            ranked = [w for w, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]
            parts.append(f"Frequent title words: {', '.join(ranked)}.")
            continue
        tokens = Counter(t for v in values for t in (v.split() if " " in v.strip() else [v.strip()]) if t)
        if col in ("release_year", "year") and tokens:
            tokens = Counter(f"{t[:3]}0s" if t[:4].isdigit() else t for t in tokens.elements())
        ranked = sorted(tokens.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        if ranked:
            parts.append(f"Top {col}: " + ", ".join(f"{k} ({v})" for k, v in ranked) + ".")
    return " ".join(parts)


def template_profiles_for(histories: dict[str, list[str]], items: pd.DataFrame, id_column: str,
                          columns: Sequence[str]) -> dict[str, str]:
    """:func:`template_profile` for every user of ``histories``."""
    table = items.drop_duplicates(id_column).set_index(id_column)
    out = {}
    for user, tokens in histories.items():
        rows = table.reindex([t for t in tokens if t in table.index])
        out[user] = template_profile(rows.reset_index(), columns)
    return out


# ------------------------------------------------------------------------------------------------ LLM path
def build_prompt(user: str, history: Sequence[tuple[str, str]], max_items: int = 50) -> str:
    """The paper's prompt (supplement, Table 1) for ``user`` with its last ``max_items`` (id, text) pairs.

    ``max_items`` must be a positive integer (0 would slice ``[-0:]``, the whole history)."""
    _check_max_items(max_items)
    lines = "\n".join(f"  - {item}: {text}" for item, text in list(history)[-max_items:])
    return PROMPT.format(user=user, history=lines)


def _check_max_items(max_items: object) -> int:
    """``max_items`` if it is an integer >= 1, else a :class:`ConfigError` naming ``--max-items``."""
    if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1:
        raise ConfigError(f"--max-items (max_items) must be an integer >= 1 (history items per prompt), "
                          f"got {max_items!r}")
    return max_items


def extract_answer(output: str) -> str:
    """The ``<answer>`` part of an LLM output (the whole output, stripped of ``<think>``, if it has none)."""
    match = re.search(r"<answer>(.*?)(</answer>|$)", output, flags=re.S)
    if match:
        return match.group(1).strip()
    return re.sub(r"<think>.*?</think>", "", output, flags=re.S).strip()


class TransformersBackend:
    """A local causal LM through ``transformers`` (by name or path; no download unless allowed)."""

    def __init__(self, model: str, device: str | None = None, max_new_tokens: int = 512,
                 allow_download: bool = False) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kwargs = {"local_files_only": not allow_download}
        self.tokenizer = AutoTokenizer.from_pretrained(model, **kwargs)
        self.model = AutoModelForCausalLM.from_pretrained(model, **kwargs).to(device or "cpu").eval()
        self.max_new_tokens = max_new_tokens

    def __call__(self, prompt: str) -> str:
        import torch

        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                      add_generation_prompt=True)
        else:
            text = prompt
        inputs = self.tokenizer(text, return_tensors="pt").to(self.model.device)
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
        return self.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


class HTTPBackend:
    """An OpenAI-compatible ``/chat/completions`` endpoint (vLLM, Ollama, ...)."""

    def __init__(self, url: str, model: str = "default", api_key: str | None = None, timeout: float = 300.0,
                 max_tokens: int = 1024) -> None:
        self.url = url.rstrip("/")
        if not self.url.endswith("/chat/completions"):
            self.url += "/chat/completions"
        self.model, self.api_key, self.timeout, self.max_tokens = model, api_key, timeout, max_tokens

    def __call__(self, prompt: str) -> str:
        body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": prompt}],
                           "temperature": 0, "max_tokens": self.max_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            payload = json.loads(response.read().decode())
        try:
            return payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise RuntimeError(f"unexpected response from {self.url}: {str(payload)[:200]}") from exc


def _read_cache(path: str) -> dict[str, str]:
    done: dict[str, str] = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut by an interruption
                    done[str(record["user"])] = record["profile"]
    return done


def generate_profiles(users: Iterable[str], prompt_of: Callable[[str], str], backend: Callable[[str], str],
                      cache_path: str, show_progress: bool = True) -> dict[str, str]:
    """Run ``backend`` for every user not yet in ``cache_path`` (JSONL), appending as it goes; returns all."""
    done = _read_cache(cache_path)
    todo = [u for u in users if u not in done]
    os.makedirs(os.path.dirname(os.path.abspath(cache_path)), exist_ok=True)
    if done:
        logger.info(f"profiles: {len(done)} cached in {cache_path}, {len(todo)} to generate")
    with open(cache_path, "a", encoding="utf-8") as f:
        for user in tqdm(todo, desc="user profiles", disable=not show_progress, unit="user"):
            profile = extract_answer(backend(prompt_of(user)))
            f.write(json.dumps({"user": user, "profile": profile}) + "\n")
            f.flush()
            done[user] = profile
    return done


def extract_profile_features(
    config,
    output: str,
    item_table: str | None = None,
    columns: Sequence[str] | None = None,
    id_column: str | None = None,
    backend: str = "template",
    model: str | None = None,
    url: str | None = None,
    encoder: str | None = None,
    max_items: int = 50,
    show_progress: bool = True,
    allow_download: bool = False,
) -> str:
    """From a RecBole ``Config`` to a user-profile feature file (.npz keyed by user token); returns its path.

    The profile texts are kept beside it in ``<output>.profiles.jsonl`` (the resumable cache). ``output``
    (an ``.npz``: it records the training split's fingerprint) and ``max_items`` are checked first.
    """
    from recgoat_recbole.features.text import compose_texts, read_table

    output = check_output_path(output, (".npz",))
    _check_max_items(max_items)
    check_text_encoder(encoder)  # before hours of generation, not after

    histories, dataset, fingerprint = training_histories(config)
    item_table = item_table or os.path.join(config["data_path"], f"{config['dataset']}.item")
    items = read_table(item_table)
    id_column = id_column or items.columns[0]
    columns = list(columns or [c for c in items.columns if c != id_column])  # default: every column but the id
    cache = output + ".profiles.jsonl"
    if backend == "template":
        profiles = template_profiles_for(histories, items, id_column, columns)
        _write_profile_texts(cache, profiles)
    else:
        texts = dict(zip(items[id_column].astype(str), compose_texts(items, list(columns))))
        if backend == "transformers":
            if not model:
                raise ValueError("backend 'transformers' needs --model (a name or local path)")
            llm: Callable[[str], str] = TransformersBackend(model, allow_download=allow_download)
        elif backend == "http":
            if not url:
                raise ValueError("backend 'http' needs --url (an OpenAI-compatible endpoint)")
            llm = HTTPBackend(url, model or "default")
        else:
            raise ValueError(f"backend must be template, transformers or http, got {backend!r}")
        prompt_of = lambda u: build_prompt(u, [(i, texts.get(i, "")) for i in histories[u]], max_items)  # noqa: E731
        profiles = generate_profiles(sorted(histories), prompt_of, llm, cache, show_progress)
    return _embed_profiles({u: profiles[u] for u in histories}, output, encoder, show_progress, allow_download,
                           split=fingerprint)
