"""TRICE's question-answering data: WebQuestions, NaturalQuestions (open), TriviaQA, HotpotQA, and a passage corpus.

Every loader reads the public release's own layout from the data directory and returns
:class:`~toolenv.types.Task` objects whose ``answer`` is the first gold answer and whose
``meta["aliases"]`` holds all of them. Files (relative to the data directory):

- WebQuestions (Berant et al. 2013, the YodaQA split): ``webquestions/{trainmodel,val,devtest,test}.json``,
  JSON arrays of ``{"qId", "qText", "answers"}``. Splits: ``train`` (trainmodel, 2,834), ``valid``
  (val, 755), ``devtest`` (189), ``test`` (the original test set, 2,032).
- NaturalQuestions, open-domain (Lee et al. 2019): ``nq_open/NQ-open.{train,dev}.jsonl`` and
  ``nq_open/NQ-open.efficientqa.dev.1.1.jsonl``, lines of ``{"question", "answer": [...]}``. Splits:
  ``train`` (87,925; not in every copy: the file is large), ``valid`` (EfficientQA dev, 1,800),
  ``test`` (NQ-open dev, 3,610, the standard evaluation set).
- TriviaQA (Joshi et al. 2017), the official unfiltered release:
  ``triviaqa/triviaqa-unfiltered/unfiltered-web-{train,dev}.json``, ``{"Data": [{"QuestionId",
  "Question", "Answer": {"Value", "Aliases", ...}}]}``. Splits: ``train``, ``test`` (the dev file, as
  is usual for open-domain QA).
- HotpotQA (Yang et al. 2018): ``hotpotqa/hotpot_dev_distractor_first100.json`` (questions with
  their ten context paragraphs and supporting-fact titles) and ``hotpotqa/hotpot_dev_v1_simplified.json``
  (all 7,405 dev questions, no passages). Splits: ``train`` (distractor items 0-79), ``test``
  (items 80-99), ``dev`` (the 7,405, for a user-supplied corpus). The distractor items carry a
  gold solution: ``WikiSearch(title)`` for each supporting title, then the answer.

TRICE's other two tasks:

- LAMA T-REx (Petroni et al. 2019), LAMA's own layout: ``lama/TREx/P*.jsonl``, one fact per line,
  ``{"uuid", "sub_label", "obj_label", "predicate_id", "evidences": [{"masked_sentence", "obj_surface", ...}]}``.
  The question is the first evidence sentence cut at ``[MASK]`` and ended with ``?``, as TRICE
  writes them ("The steel is named after Damascus, the capital city of ?"); the answer is
  ``obj_label``. Splits: ``test`` holds the facts whose ``uuid`` hashes to 0 mod 5 (a fifth, as
  TRICE's 12,607 / 3,154), ``train`` the rest.
- MLQA (Lewis et al. 2020), its own layout: ``mlqa/MLQA_V1/{dev,test}/{dev,test}-context-{c}-question-{q}.json``
  (SQuAD format). The question is TRICE's ``"Context: ...\nQuestion: ..."`` with the context in
  English and the question in another language; splits ``train`` (the dev file) and ``test``.

The passage corpus ``WikiSearch`` searches is a JSON Lines file of ``{"title", "text"}`` records
(any other fields ignored), given as ``corpus=PATH`` — for instance a Wikipedia passage dump,
DPR's ``psgs_w100`` converted to that layout. Without one, :func:`hotpotqa_passages` gives the
992 paragraphs of the HotpotQA distractor file, enough for its 100 questions and offline.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from toolenv.datasets.base import DataFormatError, check_choice, read_json, read_json_lines, record_of, require_file
from toolenv.types import Task, ToolCall

__all__ = [
    "QA_DATASETS",
    "QA_SPLITS",
    "MLQA_LANGUAGES",
    "hotpotqa_passages",
    "lama_passages",
    "load_corpus",
    "load_lama",
    "load_mlqa",
    "load_hotpotqa",
    "load_nq",
    "load_triviaqa",
    "load_webquestions",
    "qa_tasks",
    "trice_fewshot",
]

logger = logging.getLogger(__name__)
PathArg = str | os.PathLike[str] | None

QA_SPLITS: dict[str, tuple[str, ...]] = {
    "webquestions": ("train", "valid", "devtest", "test"),
    "nq": ("train", "valid", "test"),
    "triviaqa": ("train", "test"),
    "hotpotqa": ("train", "test", "dev"),
}
#: MLQA's languages (Lewis et al. 2020); TRICE asks the question in one and gives the context in English.
MLQA_LANGUAGES = ("en", "ar", "de", "es", "hi", "vi", "zh")
QA_DATASETS = tuple(QA_SPLITS)
_HOTPOT_DISTRACTOR = "hotpotqa/hotpot_dev_distractor_first100.json"
_HOTPOT_TRAIN = 80


def _task(task_id: str, question: str, aliases: Sequence[str], meta: dict[str, Any], solution: tuple[ToolCall, ...] = ()) -> Task:
    aliases = [str(a).strip() for a in aliases if str(a).strip()]
    if not aliases:
        raise ValueError("no gold answer")
    return Task(task_id, str(question).strip(), aliases[0], solution, {**meta, "aliases": aliases})


def load_webquestions(split: str, data_dir: PathArg = None) -> list[Task]:
    check_choice("split", split, QA_SPLITS["webquestions"])
    name = {"train": "trainmodel", "valid": "val", "devtest": "devtest", "test": "test"}[split]
    path = require_file(data_dir, f"webquestions/{name}.json")
    tasks = []
    for i, item in enumerate(read_json(path)):
        with record_of(path, f"item {i}"):
            tasks.append(_task(f"webquestions-{item['qId']}", item["qText"], item["answers"], {"dataset": "webquestions", "split": split}))
    return tasks


def load_nq(split: str, data_dir: PathArg = None) -> list[Task]:
    check_choice("split", split, QA_SPLITS["nq"])
    name = {"train": "NQ-open.train.jsonl", "valid": "NQ-open.efficientqa.dev.1.1.jsonl", "test": "NQ-open.dev.jsonl"}[split]
    path = require_file(data_dir, f"nq_open/{name}")
    tasks = []
    for i, (lineno, item) in enumerate(read_json_lines(path)):
        with record_of(path, f"line {lineno}"):
            tasks.append(_task(f"nq-{split}-{i}", item["question"], item["answer"], {"dataset": "nq", "split": split}))
    return tasks


def load_triviaqa(split: str, data_dir: PathArg = None) -> list[Task]:
    check_choice("split", split, QA_SPLITS["triviaqa"])
    path = require_file(data_dir, f"triviaqa/triviaqa-unfiltered/unfiltered-web-{'train' if split == 'train' else 'dev'}.json")
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("Data"), list):
        raise DataFormatError(f"{path}: expected TriviaQA's layout, an object with a 'Data' list.")
    tasks = []
    for i, item in enumerate(data["Data"]):
        with record_of(path, f"Data[{i}]"):
            answer = item["Answer"]
            aliases = [answer["Value"], *answer.get("Aliases", [])]
            tasks.append(_task(f"triviaqa-{item['QuestionId']}", item["Question"], list(dict.fromkeys(aliases)),
                               {"dataset": "triviaqa", "split": split}))
    return tasks


def _hotpot_distractor(data_dir: PathArg) -> tuple[Path, list[dict[str, Any]]]:
    path = require_file(data_dir, _HOTPOT_DISTRACTOR)
    items = read_json(path)
    if not isinstance(items, list):
        raise DataFormatError(f"{path}: expected a JSON array of HotpotQA items.")
    return path, items


def load_hotpotqa(split: str, data_dir: PathArg = None) -> list[Task]:
    check_choice("split", split, QA_SPLITS["hotpotqa"])
    if split == "dev":
        path = require_file(data_dir, "hotpotqa/hotpot_dev_v1_simplified.json")
        tasks = []
        for i, item in enumerate(read_json(path)):
            with record_of(path, f"item {i}"):
                tasks.append(_task(f"hotpotqa-dev-{i}", item["question"], [item["answer"]], {"dataset": "hotpotqa", "split": split,
                                                                                            "type": item.get("type")}))
        return tasks
    path, items = _hotpot_distractor(data_dir)
    lo, hi = (0, _HOTPOT_TRAIN) if split == "train" else (_HOTPOT_TRAIN, len(items))
    tasks = []
    for i in range(lo, hi):
        with record_of(path, f"item {i}"):
            item = items[i]
            titles = list(dict.fromkeys(item["supporting_facts"]["title"]))
            solution = tuple(ToolCall("WikiSearch", {"query": t}) for t in titles)
            tasks.append(_task(f"hotpotqa-distractor-{i}", item["question"], [item["answer"]],
                               {"dataset": "hotpotqa", "split": split, "type": item.get("type"), "supporting_titles": titles}, solution))
    return tasks


def qa_tasks(dataset: str, split: str, data_dir: PathArg = None) -> list[Task]:
    """The tasks of a QA dataset split (see the module docstring for the files)."""
    check_choice("dataset", dataset, QA_DATASETS)
    loader = {"webquestions": load_webquestions, "nq": load_nq, "triviaqa": load_triviaqa, "hotpotqa": load_hotpotqa}[dataset]
    tasks = loader(split, data_dir)
    logger.info("%s %s: %d questions", dataset, split, len(tasks))
    return tasks


def hotpotqa_passages(data_dir: PathArg = None) -> list[tuple[str, str]]:
    """The distinct context paragraphs of the HotpotQA distractor file, as ``(title, text)`` (the default corpus)."""
    path, items = _hotpot_distractor(data_dir)
    seen: dict[str, str] = {}
    for i, item in enumerate(items):
        with record_of(path, f"item {i}"):
            for title, sentences in zip(item["context"]["title"], item["context"]["sentences"]):
                seen.setdefault(title, "".join(sentences).strip())
    return list(seen.items())


def load_corpus(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """A passage corpus: JSON Lines of ``{"title", "text"}``; a missing file or key is a clear error."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"Expected corpus to be a JSON Lines file of {{\"title\", \"text\"}} passages, but {str(p)!r} does not exist.")
    out = []
    for lineno, record in read_json_lines(p):
        with record_of(p, f"line {lineno}"):
            out.append((str(record["title"]), str(record["text"])))
    if not out:
        raise DataFormatError(f"{p}: the corpus has no passages.")
    return out


def trice_fewshot(data_dir: PathArg = None, task: str = "qa") -> list[dict[str, str]]:
    """TRICE's few-shot prompts (``trice/fewshot/{task}.jsonl``): ``{"instruction", "input", "output"}`` each,
    the output being the tool call TRICE's data generation asked for (``WikiSearch(...)`` for QA)."""
    check_choice("task", task, ("qa", "math", "lama", "mlqa"))
    path = require_file(data_dir, f"trice/fewshot/{task}.jsonl")
    out = []
    for lineno, item in read_json_lines(path):
        with record_of(path, f"line {lineno}"):
            out.append({"instruction": str(item["instruction"]), "input": str(item["input"]), "output": str(item["output"])})
    return out


def _lama_question(sentence: str) -> str:
    """TRICE's cloze question: the sentence up to ``[MASK]``, then ``?`` (the whole sentence with ``?`` for it when little comes before).

    >>> _lama_question("The steel is named after Damascus, the capital city of [MASK].")
    'The steel is named after Damascus, the capital city of ?'
    >>> _lama_question("[MASK] is the capital of Syria.")
    '? is the capital of Syria.'
    """
    before = sentence.split("[MASK]")[0].rstrip()
    return f"{before} ?" if len(before.split()) >= 3 else sentence.replace("[MASK]", "?", 1).strip()


def _lama_files(data_dir: PathArg) -> list[Path]:
    folder = require_file(data_dir, "lama/TREx")
    files = sorted(folder.glob("P*.jsonl"))
    if not files:
        raise DataFormatError(f"{folder}: expected LAMA's T-REx files P<relation>.jsonl, found none.")
    return files


def _lama_test(uuid: str) -> bool:
    import hashlib

    return int(hashlib.sha256(uuid.encode()).hexdigest(), 16) % 5 == 0


def load_lama(split: str, data_dir: PathArg = None) -> list[Task]:
    check_choice("split", split, ("train", "test"))
    tasks = []
    for path in _lama_files(data_dir):
        for lineno, item in read_json_lines(path):
            with record_of(path, f"line {lineno}"):
                uuid = str(item["uuid"])
                if _lama_test(uuid) != (split == "test"):
                    continue
                evidences = [e for e in item.get("evidences") or [] if "[MASK]" in e.get("masked_sentence", "")]
                if not evidences:
                    continue
                tasks.append(_task(f"lama-trex-{uuid}", _lama_question(evidences[0]["masked_sentence"]), [item["obj_label"]],
                                   {"dataset": "lama", "split": split, "relation": item.get("predicate_id"), "subject": item.get("sub_label")}))
    return tasks


def lama_passages(data_dir: PathArg = None) -> list[tuple[str, str]]:
    """Every T-REx evidence sentence with its mask filled, titled by the subject: the ``QA`` tool's default corpus
    (the Wikipedia sentences T-REx was aligned from)."""
    out: dict[str, tuple[str, str]] = {}
    for path in _lama_files(data_dir):
        for lineno, item in read_json_lines(path):
            with record_of(path, f"line {lineno}"):
                for e in item.get("evidences") or []:
                    text = str(e.get("masked_sentence", "")).replace("[MASK]", str(e.get("obj_surface") or item["obj_label"]))
                    out.setdefault(text, (str(item.get("sub_label", "")), text))
    return list(out.values())


def load_mlqa(split: str, data_dir: PathArg = None, *, question_lang: str = "vi", context_lang: str = "en") -> list[Task]:
    check_choice("split", split, ("train", "test"))
    check_choice("question_lang", question_lang, MLQA_LANGUAGES)
    check_choice("context_lang", context_lang, MLQA_LANGUAGES)
    part = "dev" if split == "train" else "test"
    path = require_file(data_dir, f"mlqa/MLQA_V1/{part}/{part}-context-{context_lang}-question-{question_lang}.json")
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DataFormatError(f"{path}: expected the SQuAD layout, an object with a 'data' list.")
    tasks = []
    for i, article in enumerate(data["data"]):
        with record_of(path, f"data[{i}]"):
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    question = f"Context: {paragraph['context'].strip()}\nQuestion: {qa['question'].strip()}"
                    tasks.append(_task(f"mlqa-{context_lang}-{question_lang}-{qa['id']}", question, [a["text"] for a in qa["answers"]],
                                       {"dataset": "mlqa", "split": split, "question_lang": question_lang,
                                        "question_only": qa["question"].strip()}))
    return tasks
