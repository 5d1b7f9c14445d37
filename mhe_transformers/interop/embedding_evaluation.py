"""How closely a student's sentence embeddings follow its teacher's, per text domain.

Two figures per domain, and over all domains together:

- `cosine`: the mean cosine similarity between the student's and the teacher's embedding of the same sentence;
- `spearman`: Spearman's rank correlation between the teacher's and the student's cosine similarity over sentence
  pairs (what a retrieval or clustering user sees). The pairs of a domain are, for each sentence, one with its
  nearest neighbour among the domain's other sentences under the teacher (similar pairs) and one with a random
  other sentence (mostly unrelated pairs), duplicates removed: a range of similarities, as real queries meet.

Embeddings are sentence-transformers' mean pooling over real tokens, normalised (`conversion.sentence_embeddings`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import torch
from scipy.stats import spearmanr

from .conversion import sentence_embeddings


def normalised_embeddings(model, tokenizer, texts: Sequence[str], batch_size: int = 64, max_length: int = 128):
    """Mean-pooled, L2-normalised sentence embeddings, one row per text."""
    embeddings = sentence_embeddings(model, tokenizer, texts, batch_size=batch_size, max_length=max_length)
    return torch.nn.functional.normalize(embeddings, dim=-1)


def sentence_pairs(teacher_embeddings: torch.Tensor, seed: int = 0) -> list[tuple[int, int]]:
    """Index pairs (i < j): each sentence with its teacher-nearest other sentence, and with a random other one."""
    count = len(teacher_embeddings)
    if count < 2:
        return []
    similarity = teacher_embeddings @ teacher_embeddings.T
    similarity.fill_diagonal_(-float("inf"))
    nearest = similarity.argmax(1).tolist()
    generator = random.Random(seed)
    pairs = set()
    for i in range(count):
        other = generator.randrange(count - 1)
        other += other >= i  # any index but i
        pairs |= {(min(i, nearest[i]), max(i, nearest[i])), (min(i, other), max(i, other))}
    return sorted(pairs)


def agreement(student: torch.Tensor, teacher: torch.Tensor, pairs: Sequence[tuple[int, int]]) -> dict:
    """Mean cosine between matching rows, and Spearman between teacher and student pair similarities."""
    first, second = (torch.tensor(index) for index in zip(*pairs)) if pairs else (torch.tensor([]),) * 2
    teacher_scores = (teacher[first] * teacher[second]).sum(-1)
    student_scores = (student[first] * student[second]).sum(-1)
    rho = spearmanr(teacher_scores.numpy(), student_scores.numpy()).statistic if len(pairs) > 2 else float("nan")
    return {
        "cosine": float((student * teacher).sum(-1).mean()),
        "spearman": float(rho),
        "sentences": len(student),
        "pairs": len(pairs),
        "_scores": (teacher_scores, student_scores),
    }


def evaluate_domains(
    student, teacher, tokenizer, domains: Mapping[str, Sequence[str]], seed: int = 0, max_length: int = 128
) -> dict:
    """{domain: {cosine, spearman, sentences, pairs}} and "overall": cosine over every sentence, Spearman over the
    pairs of every domain pooled (pairs never cross domains)."""
    result, all_teacher_scores, all_student_scores, cosines = {}, [], [], []
    for name, texts in domains.items():
        teacher_embeddings = normalised_embeddings(teacher, tokenizer, texts, max_length=max_length)
        student_embeddings = normalised_embeddings(student, tokenizer, texts, max_length=max_length)
        figures = agreement(student_embeddings, teacher_embeddings, sentence_pairs(teacher_embeddings, seed))
        teacher_scores, student_scores = figures.pop("_scores")
        all_teacher_scores.append(teacher_scores)
        all_student_scores.append(student_scores)
        cosines.append((student_embeddings * teacher_embeddings).sum(-1))
        result[name] = figures
    pooled = torch.cat(all_teacher_scores), torch.cat(all_student_scores)
    result["overall"] = {
        "cosine": float(torch.cat(cosines).mean()),
        "spearman": float(spearmanr(pooled[0].numpy(), pooled[1].numpy()).statistic),
        "sentences": sum(len(texts) for texts in domains.values()),
        "pairs": len(pooled[0]),
    }
    return result


__all__ = ["agreement", "evaluate_domains", "normalised_embeddings", "sentence_pairs"]
