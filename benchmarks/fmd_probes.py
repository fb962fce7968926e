"""FMD's teacher heads on pooled features: the central probe against the LDA head of ``probe=lda``.

On every training image's cached EfficientNet-Lite0 features (the FMD table's teacher, 64 px):
the central probe (the FMD table's reference: ``probe-rounds x probe-local-steps`` full-batch
steps on the pooled features) and the LDA head at several shrinkages, before and after the
temperature scaling ``probe=lda`` applies (the scale of least training cross-entropy, on the
same 41-point grid). ``probe=lda`` computes exactly this head from the clients' summed
statistics under any partition, so no partition appears here; the federated runs' own teacher
accuracy is in the FMD tables (``teacher (lda probe)``). Test accuracy, worst class and test
cross-entropy of each head; the logit spread (mean per-example standard deviation) shows why
calibration is needed, and the mean top-class probability at T = 4 how sharp a teacher the
students see.

    python -m benchmarks.fmd_probes --dataset mnist10k   # results/fmd-probes-mnist10k.{json,md}
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
import torch

from benchmarks.harness import OUT, machine
from federated_data import DataSpec, Federation
from models.lda_probe import SCALES, class_statistics, lda_head, scaled_head, scaled_nll_sums
from models.teacher_cache import teacher_features
from models.teachers import EfficientNetTeacher, head_logits, train_head
from models.training import score_logits

SHRINKAGES = (0.001, 0.01, 0.05, 0.1, 0.3)


def _score(head: dict[str, np.ndarray], features: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    logits = head_logits(torch.from_numpy(features), head)
    scores = score_logits(logits, labels)
    return {
        "accuracy": scores["accuracy"],
        "worst-class-accuracy": scores["worst-class-accuracy"],
        "test-cross-entropy": scores["loss"],
        "logit-spread": float(logits.std(dim=1).mean()),
        # What a student distils from at the FMD default T = 4: the mass on the top class.
        "top-probability-t4": float(torch.softmax(logits / 4, dim=1).max(dim=1).values.mean()),
    }


def heads(args: argparse.Namespace) -> list[dict[str, Any]]:
    fed = Federation(DataSpec(dataset=args.dataset))
    teacher = EfficientNetTeacher(fed.num_classes, image_size=args.image_size)
    cache = fed.cache_dir / "teachers"
    x, y = fed.source.x_train, fed.source.y_train
    train, _ = teacher_features(teacher, x, np.arange(len(x)), fed.data_key("train"), cache)
    test_x, test_y = fed.test.x, fed.test.y
    test, _ = teacher_features(teacher, test_x, np.arange(len(test_x)), fed.data_key("test"), cache)
    central, _ = train_head(
        teacher.initial_head(), train, y, steps=args.central_steps, lr=args.probe_lr
    )
    rows = [
        {"head": f"central probe ({args.central_steps} steps)", **_score(central, test, test_y)}
    ]
    stats = class_statistics(train, y, fed.num_classes)
    for shrinkage in SHRINKAGES:
        raw = lda_head(
            stats["class-sums"], stats["class-counts"], stats["second-moment"], shrinkage
        )
        nll = scaled_nll_sums(
            head_logits(torch.from_numpy(train), raw).numpy(), y, np.asarray(SCALES)
        )
        scale = SCALES[int(np.argmin(nll))]
        rows.append({"head": f"LDA, shrinkage {shrinkage:g}", **_score(raw, test, test_y)})
        rows.append(
            {
                "head": f"LDA, shrinkage {shrinkage:g}, scaled x{scale:.3g}",
                **_score(scaled_head(raw, scale), test, test_y),
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fmnist", choices=("fmnist", "mnist10k"))
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--central-steps", type=int, default=150, help="as the FMD table's reference")
    p.add_argument("--probe-lr", type=float, default=2.0)
    args = p.parse_args()
    rows = heads(args)
    name = f"fmd-probes-{args.dataset}"
    meta = {"settings": vars(args), "machine": machine()}
    (OUT / f"{name}.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    lines = [
        "| head | test accuracy | worst class | test cross-entropy | logit spread "
        "| top-class probability at T = 4 |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['head']} | {r['accuracy']:.3f} | {r['worst-class-accuracy']:.3f} "
            f"| {r['test-cross-entropy']:.3f} | {r['logit-spread']:.1f} "
            f"| {r['top-probability-t4']:.2f} |"
            for r in rows
        ),
    ]
    (OUT / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
